"""The Faust worker: consumes frames in batches, inspects them off the event loop, publishes verdicts."""
