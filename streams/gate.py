"""Reject gate: consumes reject commands for one line (confluent-kafka) and reports each actuation.

A PLC bridge embeds :class:`RejectGate` and calls :meth:`poll` in its control loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer

from schemas.records import RejectCommand, SchemaError
from streams.kafka import topics
from streams.kafka.config import consumer_config
from streams.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class GateStats:
    commands: int = 0
    other_lines: int = 0
    unreadable: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # capture -> arrival at the gate


class RejectGate:
    def __init__(self, settings: Settings, *, line_id: str | None = None, group_id: str | None = None):
        self.line_id = line_id or settings.line_id
        group = group_id or f"{settings.app_id}-gate-{self.line_id}"
        self.consumer = Consumer(consumer_config(settings, group))
        self.consumer.subscribe([settings.topic(topics.REJECT_COMMANDS)])
        self.stats = GateStats()

    def poll(self, timeout_s: float = 0.1) -> list[RejectCommand]:
        """This line's reject commands that arrived within ``timeout_s``."""
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
                continue
            if cmd.line_id != self.line_id:
                self.stats.other_lines += 1
                continue
            self.stats.commands += 1
            self.stats.latencies_ms.append((time.time_ns() - cmd.capture_ts_ns) / 1e6)
            out.append(cmd)
        return out

    def run(self, stop: threading.Event, on_command: Callable[[RejectCommand], None] | None = None) -> GateStats:
        report = on_command or (lambda c: log.info("REJECT part=%s reason=%s gate=%s", c.part_id, c.reason, c.gate_id))
        try:
            while not stop.is_set():
                for cmd in self.poll(0.1):
                    report(cmd)
        finally:
            self.consumer.close()
        return self.stats
