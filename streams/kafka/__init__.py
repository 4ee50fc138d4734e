"""Kafka client configuration, topic declarations and local broker control, isolated in one place."""
