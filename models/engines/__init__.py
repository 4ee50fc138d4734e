"""Inference engines behind one interface (:class:`models.engines.base.InferenceEngine`)."""
