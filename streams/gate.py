"""Reject gate: consumes reject commands for one line (confluent-kafka), checks each against its deadline, and
reports actuations and misses.

A PLC bridge embeds :class:`RejectGate`: call :meth:`poll` in the control loop, actuate what it returns, then
:meth:`acknowledge` it. A partition's offset is committed only up to its first command that is not settled yet
(acknowledged, or a miss, stale, unreadable or another line's, which the gate settles itself), so a bridge that
crashes mid-actuation gets the unacknowledged commands again instead of losing them.

A command that arrives after its deadline (or that the worker already flagged ``late``) is a **miss**: its part
may be past the gate, and actuating now could hit the part behind it. Misses are never dropped silently: they go
to ``on_missed`` (default: an error log), are counted, and the bridge decides (stop the line, divert downstream).
A callback of the bridge that raises is logged with its traceback and counted; the gate goes on with the commands
polled with it.
Commands older than ``gate_stale_after_s`` are replays of a backlog (e.g. a gate restarting after downtime):
counted and logged, not actuated, not handed to ``on_missed``.

A part that passes inspection gets no command, so silence alone cannot tell OK parts from parts nobody inspected.
The gate also follows its line's heartbeats (streams.worker.heartbeats): how far, in capture time, the workers have
delivered verdicts. When that falls more than ``gate_silence_limit_s`` behind the clock (workers down or backlogged,
camera or broker down, this gate cut off from Kafka), parts passing the gate now may have no verdict: the gate hands
the lag to ``on_silent`` (default: an error log) once per spell, counts it, and exports the lag as a gauge; the
bridge decides (stop the line, divert everything). :attr:`RejectGate.inspection_silent` says whether a spell is on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_END, Consumer, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.records import LineHeartbeat, RejectCommand, SchemaError
from streams.kafka import topics
from streams.kafka.config import gate_consumer_config
from streams.quantiles import recent_samples
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class GateStats:
    handed_out: int = 0  # on time, handed to the bridge
    actuated: int = 0  # handed out and acknowledged by the bridge
    missed: int = 0  # arrived after the deadline or decided late
    stale: int = 0
    other_lines: int = 0
    unreadable: int = 0
    silent_spells: int = 0  # times the line's inspection fell more than gate_silence_limit_s behind
    callback_errors: int = 0  # times on_missed or on_silent raised
    by_action: dict[str, int] = field(default_factory=dict)
    latencies_ms: deque[float] = field(default_factory=recent_samples)  # capture -> arrival, the latest commands
    margins_ms: deque[float] = field(default_factory=recent_samples)  # deadline - arrival (negative = missed)

    @property
    def commands(self) -> int:
        """This line's commands that were on time or missed (stale, unreadable and other lines' left out)."""
        return self.handed_out + self.missed


class GateMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.commands = Counter(
            "defectstream_gate_commands_total",
            "Reject commands seen by the gate, by line, action and outcome (actuated: acknowledged by the bridge; "
            "missed, stale, unreadable)",
            ["line", "action", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "defectstream_gate_capture_to_gate_seconds",
            "Capture until the reject command reached the gate",
            ["line"],
            buckets=(0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry,
        )
        self.inspection_lag = Gauge(
            "defectstream_gate_inspection_lag_seconds",
            "How far the line's inspection is behind the clock: now minus the capture time of the newest frame with a "
            "delivered verdict (from the workers' heartbeats; since the gate's first poll until the first one)",
            ["line"],
            registry=self.registry,
        )
        self.silent_spells = Counter(
            "defectstream_gate_inspection_silent_spells_total",
            "Times the line's inspection fell more than the silence limit behind: parts passed with no verdict",
            ["line"],
            registry=self.registry,
        )
        self.callback_errors = Counter(
            "defectstream_gate_callback_errors_total",
            "Times a callback of the bridge (on_missed, on_silent) raised; the gate logged it and went on",
            ["line", "callback"],
            registry=self.registry,
        )


class RejectGate:
    def __init__(
        self,
        settings: Settings,
        *,
        line_id: str | None = None,
        group_id: str | None = None,
        on_missed: Callable[[RejectCommand, float], None] | None = None,
        on_silent: Callable[[str, float], None] | None = None,
        metrics: GateMetrics | None = None,
    ):
        self.line_id = line_id or settings.line_id
        self.stale_after_ns = int(settings.gate_stale_after_s * 1e9)
        group = group_id or f"{settings.app_id}-gate-{self.line_id}"
        self.stats = GateStats()
        self.metrics = metrics or GateMetrics()
        self.on_missed = on_missed or _log_miss
        self.on_silent = on_silent or _log_silence
        if not settings.gate_silence_limit_s > 0:
            raise ValueError(f"gate_silence_limit_s must be above 0 seconds, got {settings.gate_silence_limit_s}")
        self.silence_limit_ns = int(settings.gate_silence_limit_s * 1e9)
        self._heartbeats_topic = settings.topic(topics.LINE_HEARTBEATS)
        # The clock starts at the first poll (a bridge may build its gate long before the line runs); then it is the
        # newest inspected capture time the heartbeats report.
        self._inspected_until_ns: int | None = None
        self._watched_since_ns: int | None = None
        self._silent = False
        # Exported from the start: a counter that first appears at 1 hides that first spell from increase().
        self.metrics.silent_spells.labels(self.line_id)
        for callback in ("on_missed", "on_silent"):
            self.metrics.callback_errors.labels(self.line_id, callback)
        self.metrics.inspection_lag.labels(self.line_id).set(0.0)
        # Handed-out commands by value (frozen records), not identity: a bridge may acknowledge a copy, e.g. one that
        # crossed a process boundary. Equal commands (a re-delivery) queue up.
        self._messages: dict[RejectCommand, deque[Message]] = {}
        # Per partition, the offsets handed out and whether each is settled, in the order consumed.
        self._open: dict[tuple[str, int], dict[int, bool]] = {}
        # Offsets are stored by _settle(), not when a message is handed out.
        self.consumer = Consumer(gate_consumer_config(settings, group))
        self.consumer.subscribe(
            [settings.topic(topics.REJECT_COMMANDS), self._heartbeats_topic],
            on_assign=self._assigned,
            on_revoke=self._forget,
            on_lost=self._forget,
        )

    @property
    def inspection_silent(self) -> bool:
        """Whether the line's inspection is more than ``gate_silence_limit_s`` behind (as of the last poll)."""
        return self._silent

    def poll(self, timeout_s: float = 0.1) -> list[RejectCommand]:
        """This line's reject commands that arrived in time, within ``timeout_s``; misses go to ``on_missed``. Also
        reads the line's heartbeats and checks for silence, so call it often (the bridge's control loop) even when
        no part is expected."""
        out = []
        if self._watched_since_ns is None:
            self._watched_since_ns = time.time_ns()
        # poll() returns as soon as one command is there; consume() would wait for a full batch or the timeout,
        # adding up to timeout_s to every actuation. What else already arrived is drained without waiting.
        first = self.consumer.poll(timeout_s)
        arrived = [] if first is None else [first, *self.consumer.consume(num_messages=100, timeout=0)]
        for msg in arrived:
            if msg.error():
                log.error("reject-command consumer error: %s", msg.error())
                continue
            if msg.topic() == self._heartbeats_topic:
                self._heartbeat(msg)
                continue
            self._open.setdefault((msg.topic(), msg.partition()), {})[msg.offset()] = False
            arrival_ns = time.time_ns()
            try:
                cmd = RejectCommand.from_json(msg.value())
            except SchemaError as exc:
                # A gate cannot act on what it cannot read; say so loudly rather than skip silently.
                self.stats.unreadable += 1
                self.metrics.commands.labels(self.line_id, "unknown", "unreadable").inc()
                log.error("unreadable reject command at offset %d: %s", msg.offset(), exc)
                self._settle(msg)
                continue
            if cmd.line_id != self.line_id:
                self.stats.other_lines += 1
                self._settle(msg)
                continue
            age_ns = arrival_ns - cmd.capture_ts_ns
            if age_ns > self.stale_after_ns:
                self.stats.stale += 1
                self.metrics.commands.labels(self.line_id, cmd.action, "stale").inc()
                log.error(
                    "stale %s command for part %s (%.1f s after capture): not actuated",
                    cmd.action,
                    cmd.part_id,
                    age_ns / 1e9,
                )
                self._settle(msg)
                continue
            margin_ms = (cmd.deadline_ts_ns - arrival_ns) / 1e6
            self.stats.latencies_ms.append(age_ns / 1e6)
            self.stats.margins_ms.append(margin_ms)
            self.stats.by_action[cmd.action] = self.stats.by_action.get(cmd.action, 0) + 1
            self.metrics.latency.labels(self.line_id).observe(age_ns / 1e9)
            if cmd.late or margin_ms < 0:
                self.stats.missed += 1
                self.metrics.commands.labels(self.line_id, cmd.action, "missed").inc()
                self._call_bridge("on_missed", self.on_missed, cmd, margin_ms)
                self._settle(msg)
                continue
            self.stats.handed_out += 1
            self._messages.setdefault(cmd, deque()).append(msg)
            out.append(cmd)
        self._check_silence(time.time_ns())
        return out

    def _heartbeat(self, msg: Message) -> None:
        """Heartbeats need no acknowledgement and no committed offset: only the newest matters (see _assigned)."""
        try:
            beat = LineHeartbeat.from_json(msg.value())
        except SchemaError as exc:
            log.error("unreadable line heartbeat at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            return
        if beat.line_id == self.line_id:
            until = beat.inspected_until_ts_ns
            self._inspected_until_ns = max(until, self._inspected_until_ns or until)

    def _check_silence(self, now_ns: int) -> None:
        since_ns = self._inspected_until_ns if self._inspected_until_ns is not None else self._watched_since_ns
        lag_ns = max(0, now_ns - (since_ns or now_ns))
        self.metrics.inspection_lag.labels(self.line_id).set(lag_ns / 1e9)
        if lag_ns > self.silence_limit_ns and not self._silent:
            self._silent = True
            self.stats.silent_spells += 1
            self.metrics.silent_spells.labels(self.line_id).inc()
            self._call_bridge("on_silent", self.on_silent, self.line_id, lag_ns / 1e9)
        elif lag_ns <= self.silence_limit_ns and self._silent:
            self._silent = False
            log.warning("inspection of line %s is back within %.1f s of the clock", self.line_id, lag_ns / 1e9)

    def _call_bridge(self, name: str, callback: Callable[..., None], *args: object) -> None:
        """The bridge's callbacks run inside poll(). One that raises (a PLC write that times out) must not cost the
        on-time commands polled with it, nor leave its command unsettled, which would stop this gate's commits."""
        try:
            callback(*args)
        except Exception:
            self.stats.callback_errors += 1
            self.metrics.callback_errors.labels(self.line_id, name).inc()
            log.exception("line %s: the bridge's %s raised; the gate goes on", self.line_id, name)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Heartbeat partitions are read from their end: a backlog of old heartbeats (a gate back after downtime)
        would report a silence that is over. Commands resume from the committed offsets. assign() here suits the
        eager assignors of consumer_config; under cooperative-sticky it would have to be incremental_assign()."""
        for p in partitions:
            if p.topic == self._heartbeats_topic:
                p.offset = OFFSET_END
        consumer.assign(partitions)

    def acknowledge(self, commands: list[RejectCommand]) -> None:
        """Mark commands as actuated; they are counted as actuations only now (a bridge that crashes before this
        has actuated nothing), and their offsets are committed with the next auto-commit once every earlier command
        of their partition is settled too. Commands are matched by value: an equal copy acknowledges its original.
        A command never acknowledged holds back its partition's commits until this gate stops or loses it."""
        for cmd in commands:
            waiting = self._messages.get(cmd)
            if waiting:
                msg = waiting.popleft()
                if not waiting:
                    del self._messages[cmd]
                self.stats.actuated += 1
                self.metrics.commands.labels(self.line_id, cmd.action, "actuated").inc()
                self._settle(msg)

    def _forget(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A partition taken away: whatever of it is not settled, its next owner gets again from the committed
        offset, and a command of it acknowledged now must not store an offset there."""
        for p in partitions:
            self._open.pop((p.topic, p.partition), None)

    def _settle(self, msg: Message) -> None:
        """Store the partition's offset past its settled prefix: a settled command behind one still being actuated
        must not commit that one away."""
        key = (msg.topic(), msg.partition())
        handed_out = self._open.get(key)
        if handed_out is None or msg.offset() not in handed_out:
            return  # handed out before a rebalance took the partition away; its new owner re-delivers it
        handed_out[msg.offset()] = True
        settled = None
        while handed_out:
            offset, done = next(iter(handed_out.items()))
            if not done:
                break
            del handed_out[offset]
            settled = offset
        if settled is not None:
            self.consumer.store_offsets(offsets=[TopicPartition(key[0], key[1], settled + 1)])

    def run(self, stop: threading.Event, on_command: Callable[[RejectCommand], None] | None = None) -> GateStats:
        report = on_command or (
            lambda c: log.info("%s part=%s label=%s gate=%s", c.action.upper(), c.part_id, c.label, c.gate_id)
        )
        try:
            while not stop.is_set():
                for cmd in self.poll(0.1):
                    report(cmd)
                    self.acknowledge([cmd])
        finally:
            self.consumer.close()
        return self.stats


def _log_silence(line_id: str, lag_s: float) -> None:
    log.error(
        "line %s: no verdict for parts captured in the last %.1f s (workers, camera or Kafka down or behind): parts "
        "passing the gate now may not have been inspected",
        line_id,
        lag_s,
    )


def _log_miss(cmd: RejectCommand, margin_ms: float) -> None:
    log.error(
        "MISSED %s for part %s (%s): %.0f ms past its deadline%s; the part may be past the gate",
        cmd.action,
        cmd.part_id,
        cmd.label or cmd.reason,
        -margin_ms,
        ", decided late by the worker" if cmd.late else "",
    )
