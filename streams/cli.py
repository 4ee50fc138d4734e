"""`defectstream` command line. Every flag overrides the matching DEFECTSTREAM_* environment variable."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

from streams.settings import Settings
from streams.shutdown import (
    Terminated,
    exit_status,
    interrupt,
    on_sigterm,
    stop_event_on_sigterm,
    stopped_by_sigterm,
)


def _add_kafka_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap",
        dest="kafka_bootstrap_servers",
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS; default: the local broker from `broker start`)",
    )
    p.add_argument(
        "--topic-prefix",
        help="prefix of every topic name (env DEFECTSTREAM_TOPIC_PREFIX; default: defectstream)",
    )


# Model commands keep their own parsers (models/*.py, torchvision-reference style) and import torch only when used.
MODEL_COMMANDS = {
    "train": ("models.train", "train a defect classifier"),
    "evaluate": ("models.evaluate", "evaluate a trained classifier on a split and write a report"),
    "synth": ("models.synthetic", "write a synthetic 16-class defect dataset"),
    "quantize": ("models.quantize", "quantize a trained classifier to an INT8 artifact, guarded by accuracy"),
    "bench-model": ("bench.model_bench", "benchmark inference engines and preprocessing (prints a table)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="defectstream", description=__doc__)
    parser.add_argument("--log-level", default=None, help="logging level (default: info)")
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="the project's local Apache Kafka (KRaft, single node)")
    broker.add_argument("action", choices=["fetch", "start", "stop", "status"])
    broker.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness (default: 90)")

    topics = sub.add_parser("topics", help="create the declared topics (idempotent) or list them")
    topics.add_argument("action", choices=["create", "list"])
    _add_kafka_flags(topics)

    worker = sub.add_parser("worker", help="run the Faust inspection worker in the foreground")
    _add_kafka_flags(worker)
    worker.add_argument("--model", dest="model_path", type=Path, help="model checkpoint (env DEFECTSTREAM_MODEL_PATH)")
    worker.add_argument("--max-batch", type=int, help="frames per inference batch (default: 8)")
    worker.add_argument(
        "--max-wait",
        dest="max_wait_s",
        type=float,
        help="seconds a frame waits for batch-mates (default: 0.02)",
    )
    worker.add_argument("--engine", help="auto | openvino-int8 | torch-fp32 | torch-bf16 | torch-fp16 (default: auto)")
    worker.add_argument("--device", help="auto | cpu | cuda[:N] (default: auto)")
    worker.add_argument("--web-port", type=int, help="HTTP port for /healthz, /readyz (default: 6066)")
    worker.add_argument("--app-id", help="Faust app id = consumer group (default: defectstream-worker)")

    camera = sub.add_parser("camera", help="camera gateway: publish frames")
    _add_kafka_flags(camera)
    camera.add_argument("--frames", type=int, default=100, help="number of frames to send (default: 100)")
    camera.add_argument(
        "--fps", type=float, default=20.0, help="frames per second, 0 = as fast as possible (default: 20)"
    )
    camera.add_argument(
        "--source",
        default="synthetic",
        help="'synthetic', a folder of JPEG/PNG images, or a video file (default: synthetic)",
    )
    camera.add_argument(
        "--jitter-ms", type=float, default=0.0, help="random +/- spread of frame times, like a real line (default: 0)"
    )
    camera.add_argument("--seed", type=int, default=0, help="synthetic source seed (default: 0)")
    camera.add_argument("--line", dest="line_id", help="line id header (default: line-1)")
    camera.add_argument("--camera", dest="camera_id", help="camera id header (default: cam-1)")

    gate = sub.add_parser("gate", help="reject gate: consume and report one line's reject commands")
    _add_kafka_flags(gate)
    gate.add_argument("--line", dest="line_id", help="line whose commands to act on (default: line-1)")
    gate.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    gate.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port (default: off)"
    )

    sink = sub.add_parser("dataset-sink", help="retraining samples -> ImageFolder tree + manifest.jsonl")
    _add_kafka_flags(sink)
    sink.add_argument("--out", required=True, type=Path, help="dataset folder to create or extend")
    sink.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)"
    )

    for name, (_, text) in MODEL_COMMANDS.items():
        sub.add_parser(name, help=f"{text} (see `defectstream {name} --help`)", add_help=False)

    sub.add_parser(
        "demo-model",
        help="build the demo's and the tests' small model (checkpoint + INT8 artifact) into the cache if missing; "
        "`make test` runs it before pytest",
    )

    demo = sub.add_parser("demo", help="end-to-end demo on the local broker (what `make demo` runs)")
    demo.add_argument("--frames", type=int, default=200, help="frames to send (default: 200)")
    demo.add_argument("--fps", type=float, default=20.0, help="camera frame rate (default: 20)")
    return parser


def _settings(args: argparse.Namespace, *names: str) -> Settings:
    overrides = {n: getattr(args, n, None) for n in names}
    overrides["log_level"] = args.log_level
    return Settings.from_env(**overrides)


def _with_cluster(settings: Settings) -> Settings:
    """Use KAFKA_BOOTSTRAP_SERVERS if set, else the local broker started by `broker start`."""
    if settings.kafka_bootstrap_servers:
        return settings
    from streams.kafka.broker import LocalKafka

    state = LocalKafka(settings).status()
    if state is None:
        sys.exit("no Kafka: set KAFKA_BOOTSTRAP_SERVERS or run `defectstream broker start` first")
    return settings.replace(kafka_bootstrap_servers=state.bootstrap)


def _run_model_command(name: str, argv: list[str]) -> int:
    import importlib

    from models.checkpoint import CheckpointError
    from models.data import DatasetError
    from models.engines.base import EngineError
    from models.quantize import QuantizationRefused

    repo_root = str(Path(__file__).resolve().parents[1])
    if repo_root not in sys.path:  # bench/ lives beside the packages, not inside the installed distribution
        sys.path.insert(0, repo_root)
    module = importlib.import_module(MODEL_COMMANDS[name][0])
    parser = module.get_args_parser()
    parser.prog = f"defectstream {name}"
    try:
        module.main(parser.parse_args(argv))
    except KeyboardInterrupt as stop:
        print(f"\ndefectstream {name}: {_stopped_by(stop)} before it finished", file=sys.stderr)
        return exit_status(stop)
    except Exception as exc:
        if stopped_by_sigterm():  # a library turned the stop into an error of its own
            print(f"\ndefectstream {name}: stopped by SIGTERM before it finished ({exc!r:.200})", file=sys.stderr)
            return exit_status(Terminated())
        if isinstance(
            exc,
            QuantizationRefused | EngineError | CheckpointError | DatasetError | FileNotFoundError | FileExistsError,
        ):
            print(f"defectstream {name}: error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


def _stopped_by(stop: KeyboardInterrupt) -> str:
    return "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODEL_COMMANDS:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # As Ctrl-C: their finally blocks remove half-built artifacts, and what they keep is written atomically.
        on_sigterm(interrupt)
        return _run_model_command(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    level = (args.log_level or Settings.from_env().log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kafka = ("kafka_bootstrap_servers", "topic_prefix")
    if args.command != "worker":  # Faust handles its own signals
        # As Ctrl-C, unless the command stops on an event instead (camera, gate, dataset-sink).
        on_sigterm(interrupt)

    if args.command == "demo-model":
        # Before pytest, not in a fixture: on a cold cache the training takes 2-5 minutes on 2 cores, and inside
        # the first test that needs the model it counted against that test's 300-s timeout.
        from models.quantize import QuantizationRefused
        from models.skeleton import ensure_skeleton_artifact, ensure_skeleton_model

        settings = _settings(args)
        started = time.monotonic()
        print(f"[demo-model] checkpoint {ensure_skeleton_model(settings.cache_dir)}")
        try:
            print(f"[demo-model] INT8 artifact {ensure_skeleton_artifact(settings.cache_dir)}")
        except QuantizationRefused as exc:  # the demo serves FP32 then; the tests that need the artifact say so
            print(f"[demo-model] INT8 artifact refused by the demo guard: {exc}")
        print(f"[demo-model] ready in {time.monotonic() - started:.0f} s")
        return 0

    if args.command == "broker":
        from streams.kafka.broker import LocalKafka, fetch_jars

        settings = _settings(args)
        broker = LocalKafka(settings)
        if args.action == "fetch":
            print(fetch_jars(settings))
        elif args.action == "start":
            if settings.kafka_bootstrap_servers:
                print(f"KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} is set: using it, starting nothing")
                return 0
            state = broker.start(timeout_s=args.timeout)
            print(
                f"Kafka {settings.kafka_version} running at {state.bootstrap} (pid {state.pid}, log {state.log_file})"
            )
            print(f"export KAFKA_BOOTSTRAP_SERVERS={state.bootstrap}  # optional: other commands find it anyway")
        elif args.action == "stop":
            print("stopped" if broker.stop() else "no local broker was running")
        else:
            if settings.kafka_bootstrap_servers:
                print(f"external Kafka: {settings.kafka_bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
                return 0
            state = broker.status()
            if state is None:
                print("not running")
                return 3
            print(f"running at {state.bootstrap} (pid {state.pid}, cluster {state.cluster_id}, log {state.log_file})")
        return 0

    if args.command == "topics":
        from streams.kafka.topics import create_topics, declared_topics

        settings = _with_cluster(_settings(args, *kafka))
        if args.action == "create":
            for name, outcome in create_topics(settings).items():
                print(f"{outcome:8s} {name}")
        else:
            for name, spec in declared_topics(settings):
                print(f"{name:45s} partitions={spec.partitions:<3d} {spec.purpose}")
        return 0

    if args.command == "worker":
        from streams.worker.app import run_worker

        settings = _with_cluster(
            _settings(args, *kafka, "model_path", "engine", "max_batch", "max_wait_s", "device", "web_port", "app_id")
        )
        run_worker(settings)
        return 0

    if args.command == "camera":
        from streams.camera import CameraGateway
        from streams.sources import open_source

        settings = _with_cluster(_settings(args, *kafka, "line_id", "camera_id"))
        frames = open_source(args.source, args.frames, seed=args.seed)
        gateway = CameraGateway(settings)
        stop = stop_event_on_sigterm()  # stops between frames, so the last send and the flush complete
        try:
            stats = gateway.run(frames, fps=args.fps or None, jitter_ms=args.jitter_ms, stop=stop)
        except KeyboardInterrupt:  # Ctrl-C; run() flushed on the way out
            stats = gateway.stats
            stop.set()
        if stop.is_set():
            print("[camera] stopped")
        print(
            f"sent {stats.sent}, delivered {stats.delivered}, failed {stats.failed}, "
            f"not in Kafka by their gate deadline {stats.unconfirmed_by_deadline}; "
            f"{stats.rate_fps():.1f} frames/s, delivery p99 {stats.delivery_ms_quantile(0.99):.1f} ms"
        )
        # A frame that reached Kafka late was still delivered and gets a (late) verdict: the exit status is about
        # delivery; the late ones are in the line above and the log.
        return 0 if stats.failed == 0 and stats.delivered == stats.sent else 1

    if args.command == "gate":
        from streams.gate import RejectGate

        settings = _with_cluster(_settings(args, *kafka, "line_id"))
        gate = RejectGate(settings)
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, registry=gate.metrics.registry)
        stop = stop_event_on_sigterm()  # the commands of the last poll are reported and acknowledged first
        if args.duration:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True  # Ctrl-C before the duration must not wait for the timer
            timer.start()
        try:
            stats = gate.run(stop)
        except KeyboardInterrupt:
            stop.set()
            stats = gate.stats
        print(
            f"line {gate.line_id}: {stats.actuated} actuated {stats.by_action}, {stats.missed} missed deadlines, "
            f"{stats.stale} stale, {stats.unreadable} unreadable; inspection silent {stats.silent_spells} times"
        )
        return 0

    if args.command == "dataset-sink":
        from streams.dataset_sink import DatasetSink, ManifestError

        settings = _with_cluster(_settings(args, *kafka))
        try:
            sink = DatasetSink(settings, args.out)
        except ManifestError as exc:
            print(f"defectstream dataset-sink: error: {exc}", file=sys.stderr)
            return 1
        stop = stop_event_on_sigterm()  # the samples of the last poll are written and committed first
        if args.duration:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        try:
            stats = sink.run(stop)
        except KeyboardInterrupt:
            stats = sink.stats
        print(f"{args.out}: {stats.written} written, {stats.duplicates} duplicates, {stats.unreadable} unreadable")
        return 0

    if args.command == "demo":
        from streams.demo import print_summary, run_demo

        settings = _settings(args)
        try:
            summary = run_demo(settings, frames=args.frames, fps=args.fps)
        except KeyboardInterrupt as stop:
            print(f"\n[demo] {_stopped_by(stop)}; everything it started has been stopped")
            return exit_status(stop)
        print_summary(summary)
        ok = summary.classified == summary.sent and summary.gate_commands == summary.rejected_verdicts
        return 0 if ok else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
