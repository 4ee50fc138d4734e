"""One settings object shared by every entry point (worker, camera, gate, demo, CLI, tests).

Precedence, lowest to highest: the defaults below, environment variables, explicit keyword overrides
(which is where CLI flags land). Each field maps to exactly one environment variable: ``DEFECTSTREAM_<NAME>``,
except the Kafka address, which uses the conventional ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "DEFECTSTREAM_"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "defectstream"


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Kafka. None means "start the project's own local broker"; a value means "use that cluster, start nothing".
    kafka_bootstrap_servers: str | None = None
    kafka_version: str = "4.1.1"
    topic_prefix: str = "defectstream"
    # Kafka client security, for every client (camera, gate, sink, topic admin, worker). PLAINTEXT suits the local
    # broker and a private plant network; a shared cluster expects SASL_SSL with SCRAM. Credentials come from the
    # environment (a Kubernetes Secret, a compose env file), never from the repo or an image; streams.kafka.config
    # checks the combination and turns it into librdkafka and Faust settings.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    # PEM files: the CA that signed the brokers' certificates (default: the system store), and a client
    # certificate + unencrypted key for mutual TLS.
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None

    # Worker (Faust app).
    app_id: str = "defectstream-worker"
    worker_id: str = field(default_factory=socket.gethostname)
    model_path: Path | None = None
    engine: str = "auto"
    device: str = "auto"
    max_batch: int = 8
    # Upper bound on how long a frame waits for batch-mates. 20 ms keeps batch-1 latency low at line rates
    # (a 20 fps camera delivers a frame every 50 ms) while still batching bursts.
    max_wait_s: float = 0.02
    inference_threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    # Pin OpenVINO's inference threads to cores. Only for a worker with cores of its own (alone on its machine, or a
    # cpuset of its own): OpenVINO picks the same cores in every process, so workers sharing cores run at half speed.
    pin_inference_threads: bool = False
    # Batches the OpenVINO engine infers at once, each on its share of the inference threads (capped at
    # inference_threads). 1 = every batch on all threads: the lowest single-frame latency, but each layer's threads
    # wait for each other, and whenever another process (a broker, the event loop) takes a core they all wait.
    # 2 streams lost less under such load (bench/stream_contention.py). Torch engines infer one batch at a time.
    inference_streams: int = 2
    # Threads that decode frames, a batch each. One suits a CPU worker (more only take cores from inference). A GPU
    # worker needs more: on 4 CPUs of an H200 machine, batch 16, one decode thread held the worker's stages to 475
    # frames/s, 2 gave 800 and 3 gave 1061 (bench/worker_stages.py). Each needs a batch in flight.
    decode_threads: int = 1
    # Batches taken but not yet delivered and acked. The stages work at once (decode of up to decode_threads
    # batches, inference of up to inference_streams, verdicts and delivery of the oldest), so under load the
    # inference threads go from batch to batch without waiting for the event loop; 1 = one batch at a time. Each
    # stage thread needs two (streams.worker.stages: batches_to_keep_busy), or it waits for batches that are done
    # but not yet delivered in order; 8 = two for each of a CPU worker's 4 stage threads (1 decode, 2 inference,
    # 1 verdicts) and of a GPU worker's with 2 decode threads. Fewer log a warning at start.
    max_batches_in_flight: int = 8
    ok_class: str = "ok"
    # Top-class confidence below the class's threshold -> "review" (manual inspection): "0.5" or "0.5,scratch=0.8".
    decision_thresholds: str = "0.5"
    # Camera-to-gate travel time per line, for frames without a gate_deadline_ts_ns header: "500" or "500,line-2=800".
    line_travel_ms: str = "500"
    retrain_low_confidence_below: float = 0.8
    retrain_audit_rate: float = 0.01
    # Every review decision is also a retraining sample (false: reviews are sampled only by the two rules above).
    retrain_reviews: bool = True
    # Frames above this are dead-lettered unread (the broker's own limit is 10 MB, see streams/kafka/config.py).
    max_frame_bytes: int = 8 * 1024 * 1024
    # JPEG and PNG frames whose header declares more pixels are dead-lettered undecoded: a PNG of a few KB can declare
    # 30000x30000 and cost the worker gigabytes. 40 MP is a 7680x5120 camera (120 MB once decoded).
    max_frame_pixels: int = 40_000_000
    # Dead letters carry the original payload up to this size, only its SHA-256 above it.
    dead_letter_payload_max_bytes: int = 1024 * 1024
    # Tumbling windows of the line-stats tables, in seconds; a window is published this long after it ends.
    stats_windows_s: str = "10,60"
    stats_grace_s: float = 2.0
    # How often the worker checks the model path for a new model to swap in; 0 = never (POST /reload still works).
    model_reload_interval_s: float = 10.0
    # A reload that has not loaded and warmed up the new model in this long is refused, and the old model serves on
    # (streams.worker.reload): a hung call there would otherwise block every later reload. Loading and warming up
    # the INT8 ResNet-50 (160 px, batch 8) takes 0.9-1.2 s on this 2-core box; 0 = wait for ever.
    model_reload_timeout_s: float = 120.0
    reduced_decode: bool = True
    # Exit (code 75, for the supervisor to restart) when a partition with lag has had nothing read from it for this
    # long while the worker waited for input or read other partitions (streams.worker.fetch_watch); 0 = never. Such
    # a partition is read within a fetch round trip, or a few batches when the worker is busy (Faust takes from every
    # partition in turn), so a minute without a single read is not a slow worker.
    fetch_stall_limit_s: float = 60.0
    # Exit (code 75, unacked) when one call of a stage (decode, inference, verdicts) has been running this long
    # (streams.worker.stages): a hung model or driver call, whose frames would otherwise go uninspected while the
    # worker keeps its partitions and answers /healthz. A batch's call takes well under a second here (INT8
    # inference at batch 8 on 2 cores 0.05-0.2 s; a first CUDA call ~0.5 s); 0 = never.
    stage_stall_limit_s: float = 10.0
    # Exit (code 75, unacked) when the worker's event loop has run nothing for this long (streams.worker.loop_watch):
    # a call that blocks it stops every batch and the other watchdogs, while Faust's consumer thread keeps the
    # partitions. A healthy loop runs every few ms; its garbage collections take 2-4 ms (streams.worker.gc_pauses);
    # 0 = never.
    loop_stall_limit_s: float = 30.0
    # Exit (code 75, unacked) when the oldest batch taken has not been delivered and acked for this long, or frames
    # have waited this long in the agent's queue with no batch taken (streams.worker.batch_watch): the catch-all for
    # a worker stuck in a way the watchdogs above do not see. Above the delivery deadline (120 s), so a broker outage
    # usually ends in delivery's own exit, which names it; a batch takes well under a second here; 0 = never.
    batch_stall_limit_s: float = 180.0
    # How often the worker tells each line's gate how far its inspection has got (streams.worker.heartbeats).
    heartbeat_interval_s: float = 1.0
    web_port: int = 6066
    log_level: str = "info"

    # Edge clients.
    line_id: str = "line-1"
    camera_id: str = "cam-1"
    # A reject command older than this (since capture) is not actuated: its part has long left the gate.
    gate_stale_after_s: float = 60.0
    # The gate raises its silence alarm when the line's newest inspected capture time falls this far behind its clock:
    # parts passing it now may have no verdict. Above the worker's heartbeat interval plus its capture-to-verdict time.
    gate_silence_limit_s: float = 3.0

    # Where jars, trained demo models and broker run state live (outside git).
    cache_dir: Path = field(default_factory=_default_cache_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``) plus keyword overrides; ``None`` overrides are ignored."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw is not None and raw != "":
                values[f.name] = _coerce(f, raw)
        for name, value in overrides.items():
            if name not in {f.name for f in fields(cls)}:
                raise TypeError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = _coerce(_field(cls, name), value) if isinstance(value, str) else value
        return cls(**values)

    @staticmethod
    def env_name(field_name: str) -> str:
        if field_name == "kafka_bootstrap_servers":
            return BOOTSTRAP_ENV
        return ENV_PREFIX + field_name.upper()

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (e.g. a worker)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[self.env_name(f.name)] = str(value)
        return out

    def topic(self, role: str) -> str:
        """Full topic name for a role declared in :mod:`streams.kafka.topics`."""
        return f"{self.topic_prefix}.{role}"

    @property
    def broker_run_dir(self) -> Path:
        return self.cache_dir / "run" / "broker"


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in fields(cls) if f.name == name)


def _coerce(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            value = raw.strip().lower()
            if value not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise ValueError(raw)
            return value in {"1", "true", "yes", "on"}
        if kind.startswith("Path"):
            return Path(raw).expanduser()
    except ValueError as exc:
        raise ValueError(f"setting {f.name} ({Settings.env_name(f.name)}): cannot parse {raw!r} as {kind}") from exc
    return raw
