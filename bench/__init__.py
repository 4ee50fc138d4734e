"""Benchmarks: scripts that print a table and write JSON (run from the repository root)."""
