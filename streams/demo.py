"""`make demo`: camera -> Kafka -> Faust worker -> reject gate, end to end on the local broker.

Starts what it needs (broker unless KAFKA_BOOTSTRAP_SERVERS is set, worker process, gate) and stops all of it
on the way out, including on Ctrl-C.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from models.quantize import QuantizationRefused
from models.skeleton import RECIPE as SKELETON_RECIPE
from models.skeleton import ensure_skeleton_artifact, ensure_skeleton_model
from schemas.records import InspectionResult
from streams.camera import CameraGateway
from streams.gate import RejectGate
from streams.kafka import topics
from streams.kafka.broker import free_port, kafka_cluster
from streams.kafka.reader import TopicReader
from streams.kafka.topics import create_topics
from streams.quantiles import nearest_rank
from streams.settings import Settings
from streams.sources import synthetic_frames
from streams.worker.process import WorkerProcess

log = logging.getLogger(__name__)

DEMO_THRESHOLDS = "0.3"


@dataclass
class DemoSummary:
    sent: int = 0
    delivered: int = 0
    classified: int = 0
    rejected_verdicts: int = 0
    gate_commands: int = 0
    dead_letters: int = 0
    by_label: collections.Counter = field(default_factory=collections.Counter)
    by_decision: collections.Counter = field(default_factory=collections.Counter)
    gate_missed: int = 0
    gate_silent_spells: int = 0
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def latency_ms(self, q: float) -> float:
        """Nearest-rank quantile of capture -> verdict latency."""
        return nearest_rank(self.latencies_ms, q)


def _count_results(settings: Settings, summary: DemoSummary, truth: dict[str, str], stop: threading.Event) -> None:
    reader = TopicReader(settings, settings.topic(topics.RESULTS))
    try:
        while not stop.is_set():
            for rec in reader.poll(0.2):
                result = InspectionResult.from_json(rec.value)
                summary.classified += 1
                summary.by_label[result.label] += 1
                summary.by_decision[result.decision] += 1
                # Reject and review both divert the part at the gate (to the bin or to manual inspection).
                summary.rejected_verdicts += result.decision != "pass"
                summary.correct += truth.get(result.part_id) == result.label
                summary.latencies_ms.append(result.timings_ms["total_since_capture"])
    finally:
        reader.close()


def run_demo(settings: Settings, *, frames: int = 200, fps: float = 20.0, timeout_s: float = 180.0) -> DemoSummary:
    summary = DemoSummary()
    with kafka_cluster(settings) as cluster:
        where = "local Kafka (started for this demo)" if cluster.local else "external Kafka"
        print(f"[demo] {where} at {cluster.bootstrap}")
        run = uuid.uuid4().hex[:6]
        s = settings.replace(
            kafka_bootstrap_servers=cluster.bootstrap,
            # A fresh prefix per run keeps demos on a shared cluster from reading each other's frames.
            topic_prefix=f"{settings.topic_prefix}-demo-{run}",
            app_id=f"{settings.app_id}-demo-{run}",
            web_port=free_port(),
            # The 16-class demo model is a toy (about 76% right on the camera's parts) and rarely sure of itself: at the
            # product default of 0.5 most of its OK verdicts would go to review.
            decision_thresholds=DEMO_THRESHOLDS,
        )
        create_topics(s)
        print("[demo] preparing the demo classifier (trained once on synthetic parts, then cached) ...")
        try:
            s = s.replace(model_path=ensure_skeleton_artifact(s.cache_dir))
            guard = json.loads((s.model_path / "artifact.json").read_text())["accuracy"]
            print(
                f"[demo] serving the INT8 artifact {s.model_path} (demo guard: agreement with FP32 "
                f"{guard['top1_agreement']:.1%} on {guard['images']} held-out images)"
            )
        except QuantizationRefused as exc:
            s = s.replace(model_path=ensure_skeleton_model(s.cache_dir))
            print(f"[demo] INT8 guard refused the demo model ({exc}); serving FP32 {s.model_path} instead")
        worker = WorkerProcess(s, s.cache_dir / "run" / f"demo-worker-{run}.log")
        stop = threading.Event()
        threads: list[threading.Thread] = []
        gate = None
        try:
            worker.start()
            print(f"[demo] worker starting (log: {worker.log_path}) ...")
            # Created before the worker is ready: the idempotent producer fetches its producer id meanwhile,
            # instead of holding the first frames while it does.
            camera = CameraGateway(s, keep_part_labels=True)  # the summary scores results against them
            gate = RejectGate(s)
            worker.wait_ready()
            print(f"[demo] worker ready: {worker.url}/healthz, metrics at {worker.url}/metrics")
            threads = [
                threading.Thread(target=gate.run, args=(stop, lambda c: None), daemon=True),
                threading.Thread(target=_count_results, args=(s, summary, camera.stats.part_labels, stop), daemon=True),
            ]
            for t in threads:
                t.start()
            sender = threading.Thread(
                target=camera.run,
                # The demo classifier knows the skeleton's classes only; the camera shows it exactly those.
                args=(synthetic_frames(frames, seed=int(time.time()), classes=tuple(SKELETON_RECIPE["classes"])),),
                # Stopped with the rest: a thread still generating frames (OpenCV) when the interpreter exits is
                # cut off inside C++ and aborts the process ("terminate called without an active exception").
                kwargs={"fps": fps, "stop": stop},
                daemon=True,
            )
            threads.append(sender)
            sender.start()
            started = time.monotonic()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                time.sleep(1.0)
                summary.sent, summary.delivered = camera.stats.sent, camera.stats.delivered
                summary.gate_commands = gate.stats.commands
                rate = summary.classified / max(1e-9, time.monotonic() - started)
                decisions = " ".join(f"{d} {n}" for d, n in sorted(summary.by_decision.items()))
                print(
                    f"[demo] sent {summary.sent:4d}  classified {summary.classified:4d} ({rate:5.1f}/s)  {decisions}  "
                    f"gate commands {summary.gate_commands:4d}  capture->verdict p50 {summary.latency_ms(0.5):6.1f} ms "
                    f"p99 {summary.latency_ms(0.99):6.1f} ms"
                )
                if worker.returncode is not None:
                    raise RuntimeError(f"worker died ({worker.returncode}):\n{worker.log_tail()}")
                if (
                    not sender.is_alive()
                    and summary.classified >= frames
                    and summary.gate_commands >= summary.rejected_verdicts
                ):
                    break
            sender.join()
            summary.sent, summary.delivered = camera.stats.sent, camera.stats.delivered
            summary.gate_commands = gate.stats.commands
            summary.gate_missed = gate.stats.missed
            summary.gate_silent_spells = gate.stats.silent_spells
            del camera  # close the producer while the broker is still up (no reconnect noise on shutdown)
            dlq = TopicReader(s, s.topic(topics.DEAD_LETTERS))
            summary.dead_letters = len(dlq.read_until(lambda r: False, timeout_s=1.0))
            dlq.close()
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=5)
            code = worker.stop()
            print(f"[demo] worker stopped (exit {code})")
    return summary


def print_summary(summary: DemoSummary) -> None:
    print("[demo] ---- summary ----")
    print(f"[demo] frames sent       {summary.sent} (delivered {summary.delivered})")
    print(f"[demo] frames classified {summary.classified}")
    print(f"[demo] decisions         {dict(sorted(summary.by_decision.items()))}")
    print(
        f"[demo] gate              {summary.gate_commands} commands for {summary.rejected_verdicts} reject/review "
        f"verdicts, {summary.gate_missed} missed their deadline; inspection silent {summary.gate_silent_spells} times "
        "(line heartbeats)"
    )
    print(f"[demo] dead letters      {summary.dead_letters}")
    print(f"[demo] verdicts by class {dict(sorted(summary.by_label.items()))}")
    if summary.classified:
        print(f"[demo] agreement with the synthetic ground truth {summary.correct / summary.classified:.1%}")
    print(
        f"[demo] capture->verdict latency p50 {summary.latency_ms(0.5):.1f} ms, p99 {summary.latency_ms(0.99):.1f} ms "
        "(every frame, from the first one)"
    )
