"""The Faust application and its frame-inspection agent."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np
import torch

from models import engines
from models.engines.base import InferenceEngine
from schemas.frame import headers_to_dict
from streams.inspection import FrameInspector, IncomingFrame, Outgoing
from streams.kafka import topics
from streams.kafka.config import MAX_MESSAGE_BYTES, bootstrap
from streams.settings import Settings

log = logging.getLogger(__name__)

OUTPUT_ROLES = (topics.RESULTS, topics.REJECT_COMMANDS, topics.DEAD_LETTERS)
# How long a batch's records may stay undeliverable before the worker gives up (and exits without acking).
DELIVERY_DEADLINE_S = 120.0


def load_engine(settings: Settings) -> InferenceEngine:
    if settings.model_path is None:
        raise ValueError("no model: set DEFECTSTREAM_MODEL_PATH or pass --model")
    torch.set_num_threads(settings.inference_threads)
    engine = engines.load_engine(
        settings.model_path, kind=settings.engine, device=settings.device, threads=settings.inference_threads
    )
    log.info("serving %s (%s on %s) from %s", engine.version, engine.name, engine.device, settings.model_path)
    return engine


def create_app(settings: Settings, engine: InferenceEngine | None = None) -> faust.App:
    """Build the worker app. The engine is loaded once per process, here, before any frame arrives."""
    engine = engine or load_engine(settings)
    # The first forward pass pays for allocator and kernel set-up (hundreds of ms); pay it before frames arrive.
    engine.predict(np.zeros((1, 3, engine.input_size, engine.input_size), dtype=np.float32))
    inspector = FrameInspector(
        engine, ok_class=settings.ok_class, worker_id=settings.worker_id, reduced_decode=settings.reduced_decode
    )
    datadir = settings.cache_dir / "worker" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap(settings)}",
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_port=settings.web_port,
        web_host="0.0.0.0",
        # Topics are declared and created in code (streams.kafka.topics), never implicitly by a worker.
        topic_allow_declare=False,
        topic_disable_leader=True,
        # A new consumer group must start at the first unprocessed frame, never skip parts.
        consumer_auto_offset_reset="earliest",
        # Frames are large: let one fetch carry a full frame.
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        # Detect a dead worker in 10 s instead of Faust's 60 s, so its partitions move on while parts are
        # still on their way to the gate. Heartbeats must be well inside the session timeout.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # Commit acked offsets every second: after a crash at most ~1 s of frames is re-inspected.
        broker_commit_interval=1.0,
        # Verdicts are sent as soon as they exist; batching on the producer would only add latency.
        producer_linger=0.0,
        # Backpressure: buffer a few batches, not Faust's 4096 frames (which could be gigabytes of images).
        stream_buffer_maxsize=max(32, settings.max_batch * 4),
    )
    frames_topic = app.topic(settings.topic(topics.FRAMES), key_serializer="raw", value_serializer="raw")
    outputs = {
        role: app.topic(settings.topic(role), key_serializer="raw", value_serializer="raw") for role in OUTPUT_ROLES
    }
    # One inference thread per agent: torch parallelises inside a batch with its own threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspect")

    async def deliver(outgoing: list[Outgoing]) -> None:
        """Send every record and wait until Kafka has it, before take_events acks the batch.

        Reject commands go first: if anything goes wrong afterwards, the gate has already been told. Failed sends
        are retried (the producer is idempotent). If Kafka stays unreachable past DELIVERY_DEADLINE_S the process
        exits hard, so the batch is never acked: a restarted worker inspects it again rather than losing it."""
        pending = sorted(outgoing, key=lambda o: o.role != topics.REJECT_COMMANDS)
        deadline = time.monotonic() + DELIVERY_DEADLINE_S
        backoff = 0.1
        while pending:
            futures = []
            failed: list[Outgoing] = []
            for o in pending:
                try:
                    futures.append((o, await outputs[o.role].send(key=o.key, value=o.value)))
                except Exception:
                    log.exception("sending to %s failed", o.role)
                    failed.append(o)
            results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
            failed += [o for (o, _), r in zip(futures, results, strict=True) if isinstance(r, BaseException)]
            if not failed:
                return
            if time.monotonic() > deadline:
                log.critical(
                    "%d records undeliverable for %.0fs; exiting without acking the batch",
                    len(failed),
                    DELIVERY_DEADLINE_S,
                )
                os._exit(70)
            log.warning("%d of %d records not delivered; retrying in %.1fs", len(failed), len(pending), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            pending = failed

    @app.agent(frames_topic, name="inspect-frames")
    async def inspect_frames(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.max_batch, within=settings.max_wait_s):
            received = time.time_ns()
            frames = [
                IncomingFrame(
                    value=event.value,
                    headers=headers_to_dict(event.message.headers),
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                    received_ts_ns=received,
                )
                for event in events
            ]
            try:
                outgoing = await loop.run_in_executor(executor, inspector.inspect, frames)
            except Exception as exc:  # the worker must survive anything one batch can throw at it
                log.exception("inspection of a batch of %d frames failed", len(frames))
                outgoing = inspector.fail_safe(frames, "inspection_error", repr(exc))
            await deliver(outgoing)

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok", "model_version": engine.version, "worker_id": settings.worker_id})

    @app.page("/readyz")
    async def readyz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # Ready = this worker owns frame partitions, i.e. frames sent now will be inspected here or by a peer.
        assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
        return web.json({"ready": bool(assigned), "assigned": assigned}, status=200 if assigned else 503)

    return app


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM (Faust drains the current batch on shutdown)."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, workdir=str(settings.cache_dir))
    worker.execute_from_commandline()
