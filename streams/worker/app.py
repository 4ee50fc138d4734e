"""The Faust application: the frame-inspection agent, the line-stats agent, and the worker's web endpoints.

Agents:
- ``inspect-frames``: frames -> ``stream.noack_take(max_batch, within=max_wait_s)`` -> FrameInspector stages
  (decode, infer, decide; in threads of their own, streams.worker.stages) -> results, reject commands, dead
  letters, retraining samples; up to ``max_batches_in_flight`` batches in the pipeline (streams.worker.pipeline),
  delivered in order, each acked only after Kafka has every output (at-least-once).
- ``line-stats``: line counts (one LineCounts per line and inspected batch, sent with the batch's results, keyed by
  line), in batches added up per line and window -> one Faust tumbling table per window size (one write per line,
  window and batch) -> a LineStats record per line and window, published ``stats_grace_s`` after it closes.

Web (``web_port``): ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), ``POST /predict`` (image bytes in,
InspectionResult JSON out, nothing published; at most ``PREDICT_MAX_IN_PROGRESS`` at a time, more get 503),
``POST /reload`` (swap in the model at the model path now).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import faust
import torch
from confluent_kafka import KafkaException

from models import engines
from models.engines.base import InferenceEngine
from schemas import frame as frame_schema
from schemas.records import DeadLetter, InspectionResult, LineCounts, LineStats, Record, SchemaError
from streams import spell_log
from streams.inspection import FrameInspector, IncomingFrame, Outgoing
from streams.kafka import topics
from streams.kafka.config import MAX_MESSAGE_BYTES, bootstrap, faust_broker_credentials, worker_output_config
from streams.kafka.output_producer import OutputProducer
from streams.settings import Settings
from streams.shutdown import exit_anyway_after
from streams.worker import faust_fixes, fetch_watch, stats
from streams.worker.batch_watch import BatchWatchdog
from streams.worker.delivery import DELIVERY_DEADLINE_S, deliver_outputs, log_dropped
from streams.worker.gc_pauses import GCPauseWatch, freeze_startup_objects
from streams.worker.heartbeats import LineWatermarks
from streams.worker.loop_watch import EventLoopWatchdog
from streams.worker.metrics import CONTENT_TYPE, WorkerMetrics
from streams.worker.pipeline import BatchPipeline
from streams.worker.reload import ModelReloader
from streams.worker.stages import InspectionStages, log_warm_up
from streams.worker.stats_publisher import ClosedWindowPublisher

log = logging.getLogger(__name__)

OUTPUT_ROLES = (
    topics.RESULTS,
    topics.REJECT_COMMANDS,
    topics.DEAD_LETTERS,
    topics.RETRAINING_SAMPLES,
    topics.LINE_STATS,
    topics.LINE_COUNTS,
    topics.LINE_HEARTBEATS,
)
# One line-stats record may keep the publishing timer this long; it is published again next round.
LINE_STATS_PUBLISH_TIMEOUT_S = 10.0
# The line-stats agent's batches: up to this many line counts, or what came within this time. Well inside
# stats_grace_s, so a window's last counts are in its table before the window is published (a window published early
# is published again with them).
STATS_BATCH_MAX = 500
STATS_BATCH_WITHIN_S = 0.25
# Ad-hoc POST /predict checks in progress at once. They run on the stages with the line's batches, so more are
# refused (503, retry) rather than queued there: a flood of ad-hoc checks must not hold up inspection.
PREDICT_MAX_IN_PROGRESS = 2
# The start-up check of the cluster's topics (check_topics): how long to wait for its answer, and the exit code
# when topics are missing (EX_CONFIG: a restart helps only once someone has created them).
TOPIC_CHECK_TIMEOUT_S = 10.0
TOPIC_CHECK_RETRY_S = 3.0
EXIT_TOPICS_NOT_READY = 78
# After the orderly stop, how long exiting may wait for threads that have not ended before the process exits anyway.
EXIT_AFTER_STOP_S = 10.0


# How long a closed window stays in its table after it ends, so that counts which reach the line-stats agent late are
# still added to it and the window is published again, whole. Faust drops a window by the wall clock once it is
# ``expires`` past the window's end. It was 4 grace + w (6 s after the end of the 2-s windows of
# tests/integration/test_pipeline.py), and behind a burst of frames the agent took counts up to 6.4 s after they were
# produced (2-core Cascade Lake, 2026-11-28). The cost is a few table entries per line and window size.
STATS_KEEP_CLOSED_WINDOWS_S = 120.0
# Counts that come within this margin of the end of their window's stay, or later, are left out of it (logged,
# counted in defectstream_line_stats_late_frames_total): written after Faust's cleanup, they would recreate the window
# holding themselves alone, and readers, who keep a window's latest record, would lose the rest of it (the likely
# cause of the one run of test_pipeline.py that saw 960 of 1000 frames in the windows). The margin leaves the
# publisher (every 1 s) time to publish the window again with the last counts it took.
STATS_LATE_COUNT_MARGIN_S = 10.0


def stats_keep_closed_windows_s(grace_s: float) -> float:
    """How long after its end a window stays in its table: Faust's ``expires``."""
    return max(4 * grace_s, STATS_KEEP_CLOSED_WINDOWS_S)


def check_pipeline_limits(settings: Settings) -> None:
    """Refuse batch settings the agent cannot work with, before anything is loaded or joined."""
    if settings.max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {settings.max_batch}")
    if not settings.max_wait_s > 0:
        # Faust's take() would then wait for a full batch forever: a lone frame would never be inspected.
        raise ValueError(f"max_wait_s must be above 0 seconds, got {settings.max_wait_s}")
    if settings.decode_threads < 1:
        raise ValueError(f"decode_threads must be at least 1, got {settings.decode_threads}")
    if settings.inference_streams < 1:
        raise ValueError(f"inference_streams must be at least 1, got {settings.inference_streams}")
    if settings.max_batches_in_flight < 1:
        raise ValueError(f"max_batches_in_flight must be at least 1, got {settings.max_batches_in_flight}")
    if not settings.heartbeat_interval_s > 0:
        # A Faust timer with no interval would spin the event loop.
        raise ValueError(f"heartbeat_interval_s must be above 0 seconds, got {settings.heartbeat_interval_s}")


def load_engine(settings: Settings) -> InferenceEngine:
    if settings.model_path is None:
        raise ValueError("no model: set DEFECTSTREAM_MODEL_PATH or pass --model")
    torch.set_num_threads(settings.inference_threads)
    engine = engines.load_engine(
        settings.model_path,
        kind=settings.engine,
        device=settings.device,
        threads=settings.inference_threads,
        cpu_pinning=settings.pin_inference_threads,
        streams=settings.inference_streams,
    )
    log.info("loaded %s (%s on %s) from %s", engine.version, engine.name, engine.device, settings.model_path)
    return engine


def output_producer(settings: Settings) -> OutputProducer:
    # librdkafka gives up a little before the worker does, so its own reason is logged before the exit.
    return OutputProducer(worker_output_config(settings, DELIVERY_DEADLINE_S - 10.0))


def app_options(settings: Settings) -> dict[str, object]:
    """The Faust app settings for the worker's Kafka connection and how it takes frames (bench.faust_floor builds
    its app from them too); the web server and tables are create_app's."""
    datadir = settings.cache_dir / "worker" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return {
        "broker": f"kafka://{bootstrap(settings)}",
        "broker_credentials": faust_broker_credentials(settings),
        "key_serializer": "raw",
        "value_serializer": "raw",
        "store": "memory://",
        "datadir": str(datadir),
        # Topics are declared and created in code (streams.kafka.topics), never implicitly by a worker.
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        # A new consumer group must start at the first unprocessed frame, never skip parts.
        "consumer_auto_offset_reset": "earliest",
        # Frames are large: let one fetch carry a full frame.
        "consumer_max_fetch_size": MAX_MESSAGE_BYTES,
        # Detect a dead worker in 10 s instead of Faust's 60 s, so its partitions move on while parts are
        # still on their way to the gate. Heartbeats must be well inside the session timeout.
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        # Commit acked offsets every second: after a crash at most ~1 s of frames is re-inspected.
        "broker_commit_interval": 1.0,
        # Backpressure: buffer a few batches, not Faust's 4096 frames (which could be gigabytes of images).
        "stream_buffer_maxsize": max(32, settings.max_batch * 4),
    }


def create_app(
    settings: Settings,
    engine: InferenceEngine | None = None,
    metrics: WorkerMetrics | None = None,
    gc_watch: GCPauseWatch | None = None,
    *,
    producer: OutputProducer,
) -> faust.App:
    """Build the worker app. The engine is loaded once per process, here, before any frame arrives. ``producer``
    publishes the outputs; the caller closes it once the app has stopped (see :func:`run_worker`)."""
    check_pipeline_limits(settings)
    faust_fixes.install()
    engine = engine or load_engine(settings)
    inspector = FrameInspector.from_settings(engine, settings)
    metrics = metrics or WorkerMetrics()
    metrics.serving(engine)
    windows = stats.parse_windows(settings.stats_windows_s)
    app = faust.App(
        settings.app_id,
        **app_options(settings),
        web_port=settings.web_port,
        web_host="0.0.0.0",
        # POST /predict bodies up to the frame limit (aiohttp answers 413 above it).
        web_application_options={"client_max_size": settings.max_frame_bytes + 1},
        producer_max_request_size=MAX_MESSAGE_BYTES,
        # Line stats are published by the worker that owns the line's partition; a standby copy on another
        # worker would publish the same windows again.
        table_standby_replicas=0,
        table_cleanup_interval=max(1.0, settings.stats_grace_s),
    )
    frames_topic = app.topic(settings.topic(topics.FRAMES), key_serializer="raw", value_serializer="raw")
    output_topics = {role: settings.topic(role) for role in OUTPUT_ROLES}
    stats_source = app.topic(settings.topic(topics.LINE_COUNTS), key_serializer="raw", value_serializer="raw")
    tables = {
        w: app.Table(
            stats.table_name(w),
            default=stats.empty,
            partitions=topics.topic_spec(topics.LINE_COUNTS).partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )
        .tumbling(w, expires=stats_keep_closed_windows_s(settings.stats_grace_s))
        .relative_to_stream()
        for w in windows
    }
    # /predict goes through the same stages as the batches, queued behind them.
    stages = InspectionStages(inspector, decode_threads=settings.decode_threads)
    if warning := stages.in_flight_warning(settings.max_batches_in_flight):
        log.warning(warning)
    # Before frames arrive, on the threads that will serve: the first pass pays for allocator and kernel set-up
    # (hundreds of ms), each batch size's first call again for its own, and an engine may keep per-thread state
    # (PyTorch's cuDNN plans). A hot reload does the same on the new model's own threads (streams.worker.reload).
    started = time.perf_counter()
    log_warm_up("the inference threads", stages.warm_up(settings.max_batch), time.perf_counter() - started)

    reloader = ModelReloader(
        stages,
        metrics,
        model_path=settings.model_path,
        load=lambda: load_engine(settings),
        max_batch=settings.max_batch,
        timeout_s=settings.model_reload_timeout_s,
    )

    def dropped(outgoing: Outgoing, reason: str) -> None:
        # Only retraining samples are ever dropped (delivery.DROPPABLE_ROLES).
        log_dropped(outgoing, reason)
        metrics.retraining_samples_dropped.labels(reason).inc()

    watermarks = LineWatermarks(settings.worker_id)

    async def deliver(outgoing: list[Outgoing]) -> None:
        await deliver_outputs(producer, output_topics, outgoing, on_dropped=dropped)
        watermarks.delivered(outgoing)  # only now: Kafka has every verdict of the batch

    async def publish(
        role: str, records: list[tuple[str, Record]], timeout_s: float
    ) -> list[BaseException | object | None]:
        """Best-effort outputs outside the batches (line stats, heartbeats): an error per record, None if delivered."""
        try:
            return await asyncio.wait_for(
                producer.deliver([(output_topics[role], key.encode(), r.to_json()) for key, r in records]),
                timeout=timeout_s,
            )
        except TimeoutError:
            return [TimeoutError("no acknowledgement from Kafka in time")] * len(records)

    # What the agents hold (stream queues, batches in flight): the fetch watchdog tells a worker waiting for input
    # from a busy one by them.
    stream_queues: dict[str, object] = {}
    pipelines: list[BatchPipeline] = []

    @app.agent(frames_topic, name="inspect-frames")
    async def inspect_frames(stream: faust.StreamT) -> None:
        """Batches go through a BatchPipeline of up to ``max_batches_in_flight``: while the oldest is delivered (event
        loop) and its verdicts built (decide thread), later ones are inferred (an infer thread per engine stream) and
        decoded (decode threads), so under load the model goes from batch to batch without waiting for the loop.
        ``noack_take`` leaves acking to us, and a batch is acked only once Kafka has all its records, so whatever
        happens, unacked frames are inspected again by the next worker (at-least-once). Batches are delivered one at
        a time, in the order taken: one gate's commands stay ordered, and a broker outage stops the pipeline after a
        few batches instead of piling them up in memory."""
        stream_queues["inspect-frames"] = stream.channel.queue
        pipeline = BatchPipeline(
            inspect=lambda events: inspect_batch(incoming_frames(events)),
            deliver=deliver,
            ack=stream.ack,
            max_in_flight=settings.max_batches_in_flight,
        )
        pipelines.append(pipeline)
        try:
            # Not wrapped in aclosing() on purpose: closing noack_take switches the stream's auto-acks back on
            # (its finally) while frames it buffered but never yielded may still be on their way through the stream,
            # and those must stay unacked for the next worker. Left open, shutdown behaves as with take_events, which
            # tests/integration/test_worker_failover.py covers; errors end in a hard exit, never in a restart.
            async for events in stream.noack_take(settings.max_batch, within=settings.max_wait_s):
                await pipeline.submit(events)
            await pipeline.drain()
        except asyncio.CancelledError:
            # Shutdown. Faust commits acked offsets after the agents stop: finish, deliver and ack what was taken,
            # so the next worker neither loses nor repeats it; if that cannot be done, exit without acking and the
            # frames are inspected again.
            try:
                await asyncio.wait_for(pipeline.drain(), timeout=DELIVERY_DEADLINE_S)
            except BaseException:
                log.critical(
                    "shutdown with batches in flight that could not be delivered; exiting unacked", exc_info=True
                )
                os._exit(70)
            raise
        except Exception:
            # Fail-stop. A restarted agent would go on taking later frames while these stay unacked, and Faust can
            # commit past a one-offset hole: exit now, unacked, and let the next worker inspect them again.
            log.critical("the inspection agent failed; exiting without acking its batches in flight", exc_info=True)
            os._exit(70)

    def incoming_frames(events: list) -> list[IncomingFrame]:
        received = time.time_ns()
        return [
            IncomingFrame(
                value=event.value,
                headers=frame_schema.headers_to_dict(event.message.headers),
                topic=event.message.topic,
                partition=event.message.partition,
                offset=event.message.offset,
                received_ts_ns=received,
            )
            for event in events
        ]

    async def inspect_batch(frames: list[IncomingFrame]) -> list[Outgoing]:
        compute_s = None
        try:
            outgoing, compute_s = await stages.run(frames)
        except Exception as exc:  # the worker must survive anything one batch can throw at it
            log.exception("inspection of a batch of %d frames failed", len(frames))
            outgoing = inspector.fail_safe(frames, "inspection_failed", repr(exc))
        metrics.observe_batch(len(frames), compute_s, outgoing)
        return outgoing + line_counts(outgoing)

    def line_counts(outgoing: list[Outgoing]) -> list[Outgoing]:
        """The batch's counts per line, for the line-stats agent, delivered and acked with the batch. Results and
        dead letters are keyed by line id."""
        counted = stats.line_counts(
            (o.key.decode(), o.record) for o in outgoing if isinstance(o.record, InspectionResult | DeadLetter)
        )
        return [Outgoing(topics.LINE_COUNTS, c.line_id.encode(), c) for c in counted]

    @app.agent(stats_source, name="line-stats")
    async def line_stats(stream: faust.StreamT) -> None:
        """Adds up a batch of line counts per line and window first, then writes each table entry once: every table
        write is a changelog record. A batch is acked once its counts are in the tables.

        Why line counts and not the results themselves: reading every result back cost the worker 0.33 CPU-ms per
        frame (5.49 -> 5.16 with the agent off, e2e warm-up bursts), 6% of all it does per frame."""
        stream_queues["line-stats"] = stream.channel.queue
        async for events in stream.noack_take(STATS_BATCH_MAX, within=STATS_BATCH_WITHIN_S):
            now = time.time()
            # (window size, partition, line, window) -> the last event of the group and the group's counts.
            groups: dict[tuple, tuple[faust.types.EventT, dict]] = {}
            for event in events:
                record = stats_record(event)
                if record is None:
                    continue
                for w, table in tables.items():
                    # Windows as Faust's own per-event writes choose them: from the record's Kafka timestamp.
                    window = table.table.window.ranges(event.message.timestamp)[0]
                    if now - (window[0] + w) > stats_late_limit_s:
                        left_out_of_window(record, w, window[0] + w, now)
                        continue
                    key = (w, event.message.partition, record.line_id, window)
                    counts = groups[key][1] if key in groups else stats.empty()
                    groups[key] = (event, stats.merge(counts, stats.counts_of(record)))
            for (w, _partition, line, _window), (event, counts) in groups.items():
                with faust_fixes.as_current_event(event):  # its partition, its window
                    tables[w][line] = stats.merge(tables[w][line].current(), counts)
            for event in events:
                await stream.ack(event)

    stats_late_limit_s = stats_keep_closed_windows_s(settings.stats_grace_s) - STATS_LATE_COUNT_MARGIN_S
    stats_late_log = spell_log.SpellLog("line counts too late for their stats window", logger=log)

    def left_out_of_window(record: LineCounts, window_s: float, window_end_s: float, now: float) -> None:
        metrics.line_stats_late_frames.labels(record.line_id, f"{window_s:g}s").inc(record.frames)
        stats_late_log.note(
            f"{record.frames} frames of line {record.line_id} left out of the {window_s:g}s stats window that ended "
            f"at {window_end_s:.0f} (counts are taken up to {stats_late_limit_s:.0f} s after a window ends)",
            (now - window_end_s - stats_late_limit_s) * 1000,
        )

    def stats_record(event: faust.types.EventT) -> LineCounts | None:
        try:
            return LineCounts.from_json(event.value)
        except SchemaError as exc:
            log.error(
                "line-stats: skipping unreadable record at %s[%d]@%d: %s",
                event.message.topic,
                event.message.partition,
                event.message.offset,
                exc,
            )
            return None

    async def publish_window(line_id: str, record: LineStats) -> BaseException | object | None:
        (error,) = await publish(topics.LINE_STATS, [(line_id, record)], LINE_STATS_PUBLISH_TIMEOUT_S)
        return error

    window_publisher = ClosedWindowPublisher(
        settings.stats_grace_s, publish_window, keep_s=stats_keep_closed_windows_s(settings.stats_grace_s)
    )

    @app.timer(interval=1.0)
    async def publish_line_stats() -> None:
        """Publish each closed window once (again if late counts changed it: readers keep the latest per window);
        remove the windows restored from a changelog once their stay is over."""
        entries = [(w, key, value) for w, table in tables.items() for key, value in list(table.table.data.items())]
        for w, key in await window_publisher.publish_closed(entries, time.time()):
            faust_fixes.drop_restored_window(tables[w].table, key)

    @app.timer(interval=settings.heartbeat_interval_s)
    async def send_line_heartbeats() -> None:
        """Tell each line's gate how far its inspection has got. A lost heartbeat is not retried: the next one
        carries a newer capture time, and a gate that hears none for long enough raises the alarm, as it should."""
        beats = watermarks.heartbeats()
        if not beats:
            return
        errors = await publish(
            topics.LINE_HEARTBEATS, [(b.gate_id, b) for b in beats], max(1.0, settings.heartbeat_interval_s)
        )
        for beat, error in zip(beats, errors, strict=True):
            if error is not None:
                log.warning("heartbeat of line %s not delivered: %s", beat.line_id, error)

    if settings.model_reload_interval_s > 0:

        @app.timer(interval=settings.model_reload_interval_s)
        async def watch_model() -> None:
            await reloader.reload()

    @app.timer(interval=spell_log.SUMMARY_INTERVAL_S)
    async def flush_late_logs() -> None:
        inspector.late_log.flush()
        stats_late_log.flush()

    if gc_watch is not None:

        @app.timer(interval=5.0)
        async def log_gc_pauses() -> None:
            gc_watch.log_long_pauses()

    flow_watchdog = faust_fixes.FlowWatchdog()

    @app.timer(interval=5.0)
    async def watch_consumer_flow() -> None:
        stalled = flow_watchdog.stalled_for(app.consumer.flow_active)
        if stalled is not None and not app.should_stop:
            log.critical(
                "consumer flow stopped for %.0f s and never resumed; exiting unacked so a restart rejoins the group",
                stalled,
            )
            os._exit(75)

    if settings.stage_stall_limit_s > 0:

        @app.timer(interval=1.0)
        async def watch_stages() -> None:
            # A stage call that never returns (a hung model or driver call) leaves its batch, and every batch behind
            # it, uninspected while this worker keeps its partitions and answers /healthz; the other workers'
            # heartbeats keep the gate content. Exiting unacked moves the partitions to a healthy worker, which
            # inspects the frames again (late, so the gate decides: fail-safe).
            running = stages.longest_running()
            if running is not None and running[1] > settings.stage_stall_limit_s and not app.should_stop:
                stage, seconds = running
                log.critical(
                    "one %s call has been running for %.0f s (DEFECTSTREAM_STAGE_STALL_LIMIT_S=%g); exiting "
                    "unacked so another worker inspects this worker's frames",
                    stage,
                    seconds,
                    settings.stage_stall_limit_s,
                )
                os._exit(75)

    if settings.fetch_stall_limit_s > 0:
        fetch_watchdog = fetch_watch.FetchWatchdog(settings.fetch_stall_limit_s)

        @app.timer(interval=5.0)
        async def watch_fetching() -> None:
            consumer = app.consumer
            fetching = consumer.flow_active and not (app.rebalancing or app.in_recovery)
            # Waiting for input: nothing queued or in flight.
            idle = not any(q.qsize() for q in stream_queues.values()) and not any(len(p) for p in pipelines)
            tps = {tp for tp in consumer.assignment() if not consumer._is_changelog_tp(tp)}
            read = {tp: consumer._read_offset.get(tp) for tp in tps}
            lagging: list = []
            if fetching and tps:
                try:
                    highwaters = await asyncio.wait_for(consumer.highwaters(*tps), timeout=10.0)
                    unread = [tp for tp, offset in read.items() if offset is None]
                    earliest = (
                        await asyncio.wait_for(consumer.earliest_offsets(*unread), timeout=10.0) if unread else {}
                    )
                except Exception as exc:  # a broker hiccup: no verdict this round
                    log.warning("fetch watchdog: cannot read partition offsets: %r", exc)
                    return
                lagging = fetch_watch.lagging_partitions(read, highwaters, earliest)
            stalled = fetch_watchdog.stalled(fetching=fetching, idle=idle, lagging=lagging, read_offsets=read)
            if stalled and not app.should_stop:
                log.critical(
                    "partitions %s have records waiting but nothing was read from them for %.0f s while the worker "
                    "read others or waited for input; exiting unacked so a restart fetches them again. Consumer "
                    "state: %s",
                    fetch_watch.partition_names(stalled),
                    max(stalled.values()),
                    fetch_watch.consumer_state(app, tps, stream_queues),
                )
                os._exit(75)

    if settings.batch_stall_limit_s > 0:
        if settings.batch_stall_limit_s <= DELIVERY_DEADLINE_S:
            log.warning(
                "DEFECTSTREAM_BATCH_STALL_LIMIT_S=%g is within the delivery deadline (%g s): a broker outage that "
                "delivery would ride out ends the worker",
                settings.batch_stall_limit_s,
                DELIVERY_DEADLINE_S,
            )
        batch_watchdog = BatchWatchdog(settings.batch_stall_limit_s)

        @app.timer(interval=1.0)
        async def watch_batches() -> None:
            if not pipelines:
                return
            pipeline = pipelines[-1]  # the agent's; it is never restarted (errors end the worker)
            queue = stream_queues["inspect-frames"]
            stuck = batch_watchdog.stuck(
                oldest=pipeline.oldest_unfinished(),
                frames_waiting=queue.qsize() > 0 and not (app.rebalancing or app.in_recovery),
                room=not pipeline.full,
                batches_taken=pipeline.batches_taken,
            )
            if stuck is not None and not app.should_stop:
                log.critical(
                    "%s (DEFECTSTREAM_BATCH_STALL_LIMIT_S=%g); exiting unacked so another worker inspects this "
                    "worker's frames",
                    stuck,
                    settings.batch_stall_limit_s,
                )
                os._exit(75)

    if settings.loop_stall_limit_s > 0:
        # A thread, not a timer: a blocked loop would stop a timer, and the watchdogs above with it.
        loop_watchdog = EventLoopWatchdog(settings.loop_stall_limit_s)

        @app.task
        async def watch_event_loop() -> None:
            loop_watchdog.start()

    @app.page("/healthz")
    async def healthz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok", "model_version": inspector.serving.version, "worker_id": settings.worker_id})

    @app.page("/readyz")
    async def readyz(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        # Ready = this worker owns frame partitions, i.e. frames sent now will be inspected here or by a peer.
        assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
        return web.json({"ready": bool(assigned), "assigned": assigned}, status=200 if assigned else 503)

    @app.page("/metrics")
    async def prometheus(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE.split(";")[0])

    @app.page("/reload")
    class Reload(faust.web.View):
        async def post(self, request: faust.web.Request) -> faust.web.Response:
            outcome = await reloader.reload(force=True)
            return self.json(outcome, status=200 if "error" not in outcome else 409)

    predict_slots = asyncio.Semaphore(PREDICT_MAX_IN_PROGRESS)

    @app.page("/predict")
    class Predict(faust.web.View):
        """Ad-hoc check: image bytes in, InspectionResult out. Nothing is published to Kafka."""

        async def post(self, request: faust.web.Request) -> faust.web.Response:
            content_type = (request.headers.get("Content-Type") or "image/jpeg").split(";")[0].strip()
            if content_type not in ("image/jpeg", "image/png"):
                return self.error(415, f"Content-Type must be image/jpeg or image/png, got {content_type!r}")
            length = request.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > settings.max_frame_bytes:
                return self.error(413, f"body of {length} bytes is above the limit of {settings.max_frame_bytes}")
            body = await self.read_request_content(request)
            query = request.query
            headers = {
                frame_schema.PART_ID: query.get("part_id") or f"adhoc-{uuid.uuid4().hex[:12]}",
                frame_schema.LINE_ID: query.get("line_id") or "adhoc",
                frame_schema.CAMERA_ID: query.get("camera_id") or "http",
                frame_schema.CAPTURE_TS_NS: str(time.time_ns()),
                frame_schema.CONTENT_TYPE: content_type,
            }
            frame = IncomingFrame(body, headers, "http", 0, 0, received_ts_ns=time.time_ns())
            if predict_slots.locked():  # checked and taken with no await between: no other request gets in
                return self.error(
                    503,
                    f"{PREDICT_MAX_IN_PROGRESS} ad-hoc checks already in progress; retry shortly",
                    headers={"Retry-After": "1"},
                )
            async with predict_slots:
                outgoing, _ = await stages.run([frame])
            record = next(o.record for o in outgoing if o.role in (topics.RESULTS, topics.DEAD_LETTERS))
            if isinstance(record, DeadLetter):
                return self.error(400, f"{record.reason}: {record.detail}", reason_code=record.reason)
            return self.json(record.to_dict())

    return app


def check_topics(settings: Settings) -> None:
    """Exit (code ``EXIT_TOPICS_NOT_READY``) when the cluster lacks topics this worker needs. Workers never create
    topics, and without this a missing table changelog (say, after a new stats window was configured) stopped the
    line-stats agent with an error in the log while the worker went on as ready, without line stats. Checked twice
    before giving up: a broker may not know a topic created a moment ago yet."""
    for attempt in range(2):
        try:
            problems = topics.topic_problems(settings, timeout_s=TOPIC_CHECK_TIMEOUT_S)
        except KafkaException as exc:  # as before this check: Faust waits for the cluster
            log.warning("could not check the topics (%s); starting anyway", exc)
            return
        if not problems:
            return
        if attempt == 0:
            time.sleep(TOPIC_CHECK_RETRY_S)
    log.critical("cannot start: %s", "; ".join(problems))
    raise SystemExit(EXIT_TOPICS_NOT_READY)


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM (the batches in flight are finished, delivered and
    acked before Faust's final commit)."""
    check_topics(settings)
    metrics = WorkerMetrics()
    gc_watch = GCPauseWatch(metrics.observe_gc_pause)
    producer = output_producer(settings)
    status = 1
    try:
        app = create_app(settings, metrics=metrics, gc_watch=gc_watch, producer=producer)
        # Now torch, OpenVINO, Faust and the model are loaded: nearly every long-lived object exists (see gc_pauses).
        freeze_startup_objects()
        gc_watch.install()
        worker = faust.Worker(app, loglevel=settings.log_level, workdir=str(settings.cache_dir))
        worker.execute_from_commandline()
    except SystemExit as stop:  # how Faust's worker ends, 0 after an orderly stop
        status = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        raise
    finally:
        # Every batch was acked only after its records were delivered; this only waits for line-stats publishes.
        if remaining := producer.close():
            log.warning("%d output records still undelivered at shutdown", remaining)
        spell_log.flush_every_spell_log()  # the late ones noted since the last 5-s summary
        # A hot reload whose warm-up hung left threads that cannot be stopped (streams.worker.reload).
        exit_anyway_after(EXIT_AFTER_STOP_S, status)
