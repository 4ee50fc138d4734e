"""Prometheus metrics of one worker process, served on the worker's ``/metrics``.

Names follow the Prometheus conventions (``defectstream_`` prefix, base units, ``_total`` for counters). Every frame
is counted exactly once in ``defectstream_frames_total``: by decision for inspected frames, as ``unreadable`` for
dead-lettered ones, so the counters add up to the frames consumed.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from models.engines.base import InferenceEngine
from schemas.frame import LINE_ID
from schemas.records import DeadLetter, InspectionResult, RejectCommand, RetrainingSample
from streams.inspection import UNKNOWN_LINE, Outgoing
from streams.worker.delivery import PERMANENT_REFUSALS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "defectstream_frames_total",
            "Frames consumed, by line and decision (or unreadable)",
            ["line", "decision"],
            registry=r,
        )
        self.predictions = Counter(
            "defectstream_predictions_total",
            "Inspection results, by line, predicted class and decision",
            ["line", "label", "decision"],
            registry=r,
        )
        self.reject_commands = Counter(
            "defectstream_reject_commands_total",
            "Reject commands sent, by line, action and reason",
            ["line", "action", "reason"],
            registry=r,
        )
        self.late_commands = Counter(
            "defectstream_late_commands_total",
            "Reject commands decided after their gate deadline",
            ["line"],
            registry=r,
        )
        self.late_verdicts = Counter(
            "defectstream_late_verdicts_total",
            "Inspection results decided after their gate deadline, by decision",
            ["line", "decision"],
            registry=r,
        )
        self.line_stats_late_frames = Counter(
            "defectstream_line_stats_late_frames_total",
            "Frames whose counts reached the line-stats agent after their window's time in its table, left out of "
            "that window's line-stats record, by line and window size",
            ["line", "window"],
            registry=r,
        )
        self.dead_letters = Counter(
            "defectstream_dead_letters_total", "Frames dead-lettered, by reason", ["reason"], registry=r
        )
        self.retraining_samples = Counter(
            "defectstream_retraining_samples_total",
            "Retraining samples selected and sent, by selection reason (those Kafka refused for good are also "
            "counted in defectstream_retraining_samples_dropped_total)",
            ["reason"],
            registry=r,
        )
        self.retraining_samples_dropped = Counter(
            "defectstream_retraining_samples_dropped_total",
            "Retraining samples Kafka refused for good (e.g. larger than the topic's max.message.bytes), dropped so "
            "that inspection goes on, by Kafka error",
            ["reason"],
            registry=r,
        )
        for code in sorted(PERMANENT_REFUSALS):  # at 0 from the start, so the first drop is an increase
            self.retraining_samples_dropped.labels(KafkaError(code).name())
        self.batch_size = Histogram(
            "defectstream_batch_size", "Frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.queue_wait = Histogram(
            "defectstream_queue_wait_seconds",
            "Capture until the worker received the frame",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "defectstream_batch_compute_seconds",
            "Decode + preprocess + inference of one batch (its own work, not time queued behind other batches)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.capture_to_decision = Histogram(
            "defectstream_capture_to_decision_seconds",
            "Capture until the decision, per frame",
            ["line"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "defectstream_gc_pause_seconds",
            "Python garbage-collection pauses, by generation (every worker thread stops meanwhile)",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        # Created now, not in observe_gc_pause: that runs inside the garbage collector, where labels() could wait
        # for the metric's lock held by a /metrics scrape on the same thread.
        self._gc_pause_by_generation = {g: self.gc_pause.labels(str(g)) for g in range(3)}
        self.confidence = Histogram(
            "defectstream_confidence",
            "Top-class confidence of inspected frames",
            ["line"],
            buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )
        self.model_info = Gauge(
            "defectstream_model_info",
            "The model being served (value 1)",
            ["model_name", "model_version", "engine", "precision", "device"],
            registry=r,
        )
        self.model_reloads = Counter(
            "defectstream_model_reloads_total", "Hot reloads of the model artifact, by outcome", ["outcome"], registry=r
        )

    def serving(self, engine: InferenceEngine) -> None:
        self.model_info.clear()
        self.model_info.labels(engine.model_name, engine.version, engine.name, engine.precision, engine.device).set(1)

    def observe_batch(self, batch_size: int, compute_s: float | None, outgoing: Iterable[Outgoing]) -> None:
        """``compute_s`` None: the batch failed before it was inspected (its frames are fail-safe dead letters)."""
        self.batch_size.observe(batch_size)
        if compute_s is not None:
            self.compute.observe(compute_s)
        for o in outgoing:
            rec = o.record
            if isinstance(rec, InspectionResult):
                self.frames.labels(rec.line_id, rec.decision).inc()
                self.predictions.labels(rec.line_id, rec.label, rec.decision).inc()
                self.queue_wait.observe(max(0.0, rec.timings_ms["queue_wait"]) / 1000)
                self.capture_to_decision.labels(rec.line_id).observe(
                    max(0.0, rec.timings_ms["total_since_capture"]) / 1000
                )
                self.confidence.labels(rec.line_id).observe(rec.confidence)
                if rec.late:
                    self.late_verdicts.labels(rec.line_id, rec.decision).inc()
            elif isinstance(rec, DeadLetter):
                self.frames.labels(rec.headers.get(LINE_ID) or UNKNOWN_LINE, "unreadable").inc()
                self.dead_letters.labels(rec.reason).inc()
            elif isinstance(rec, RejectCommand):
                self.reject_commands.labels(rec.line_id, rec.action, rec.reason).inc()
                if rec.late:
                    self.late_commands.labels(rec.line_id).inc()
            elif isinstance(rec, RetrainingSample):
                for reason in rec.selected_because:
                    self.retraining_samples.labels(reason).inc()

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        child = self._gc_pause_by_generation.get(generation)
        if child is not None:  # CPython has generations 0-2
            child.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
