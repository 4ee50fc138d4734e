"""Reject gate: consumes reject commands for one line (confluent-kafka) and reports each actuation.

A PLC bridge embeds :class:`RejectGate`: call :meth:`poll` in the control loop, actuate, then
:meth:`acknowledge` what was actuated. Offsets are committed only for acknowledged commands, so a bridge that
crashes mid-actuation gets the unacknowledged commands again instead of losing them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message

from schemas.records import RejectCommand, SchemaError
from streams.kafka import topics
from streams.kafka.config import consumer_config
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class GateStats:
    commands: int = 0
    stale: int = 0
    other_lines: int = 0
    unreadable: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # capture -> arrival at the gate


class RejectGate:
    def __init__(self, settings: Settings, *, line_id: str | None = None, group_id: str | None = None):
        self.line_id = line_id or settings.line_id
        self.stale_after_ns = int(settings.gate_stale_after_s * 1e9)
        group = group_id or f"{settings.app_id}-gate-{self.line_id}"
        # Offsets are stored by acknowledge(), not when a message is handed out.
        self.consumer = Consumer(consumer_config(settings, group, **{"enable.auto.offset.store": False}))
        self.consumer.subscribe([settings.topic(topics.REJECT_COMMANDS)])
        self.stats = GateStats()
        self._messages: dict[int, Message] = {}

    def poll(self, timeout_s: float = 0.1) -> list[RejectCommand]:
        """This line's actionable reject commands that arrived within ``timeout_s``."""
        out = []
        for msg in self.consumer.consume(num_messages=100, timeout=timeout_s):
            if msg.error():
                log.error("reject-command consumer error: %s", msg.error())
                continue
            try:
                cmd = RejectCommand.from_json(msg.value())
            except SchemaError as exc:
                # A gate cannot act on what it cannot read; say so loudly rather than skip silently.
                self.stats.unreadable += 1
                log.error("unreadable reject command at offset %d: %s", msg.offset(), exc)
                self.consumer.store_offsets(msg)
                continue
            if cmd.line_id != self.line_id:
                self.stats.other_lines += 1
                self.consumer.store_offsets(msg)
                continue
            age_ns = time.time_ns() - cmd.capture_ts_ns
            if age_ns > self.stale_after_ns:
                # The part left the gate long ago (e.g. a gate restarting after downtime replays its backlog):
                # actuating now would hit whatever part is in front of the gate.
                self.stats.stale += 1
                log.error(
                    "stale reject command for part %s (%.1f s after capture): not actuated", cmd.part_id, age_ns / 1e9
                )
                self.consumer.store_offsets(msg)
                continue
            self.stats.commands += 1
            self.stats.latencies_ms.append(age_ns / 1e6)
            self._messages[id(cmd)] = msg
            out.append(cmd)
        return out

    def acknowledge(self, commands: list[RejectCommand]) -> None:
        """Mark commands as actuated; their offsets are committed with the next auto-commit."""
        for cmd in commands:
            msg = self._messages.pop(id(cmd), None)
            if msg is not None:
                self.consumer.store_offsets(msg)

    def run(self, stop: threading.Event, on_command: Callable[[RejectCommand], None] | None = None) -> GateStats:
        report = on_command or (lambda c: log.info("REJECT part=%s reason=%s gate=%s", c.part_id, c.reason, c.gate_id))
        try:
            while not stop.is_set():
                for cmd in self.poll(0.1):
                    report(cmd)
                    self.acknowledge([cmd])
        finally:
            self.consumer.close()
        return self.stats
