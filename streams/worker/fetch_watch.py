"""Notices a worker whose assigned partitions have records waiting but that reads none of them, and says why.

The flow watchdog (streams.worker.faust_fixes.FlowWatchdog) covers a consumer flow that stays stopped. This covers
the other way a worker can sit idle while its line goes uninspected: the flow is on, the partitions are assigned and
have lag, and nothing is read. The report names every place that can hold records back (Faust's paused, active and
buffer-full partition sets, the stream queues and their pending pressure-drop callbacks, aiokafka's own paused flag
and fetch position per partition), so the log line that precedes the exit tells which one did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_UNSEEN = object()


class FetchWatchdog:
    """Tells which partitions with lag have gone without a single read for longer than ``limit_s``.

    Fed one observation per check: whether the worker fetches (flow active, no rebalance or recovery), whether it
    waits for input (nothing queued or in flight), the partitions with records beyond the last one read, and the read
    offsets. A partition's count starts when it has lag and no read, and ends with a read or with no lag. Every
    count restarts when the worker does not fetch, or is blocked as a whole (busy, yet nothing read anywhere since
    the last check: backpressure, deliveries being retried), so only a partition left behind while the worker waits
    for input or reads others can be reported."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic):
        self.limit_s = limit_s
        self._clock = clock
        self._since: dict[Any, float] = {}
        self._offsets: dict[Any, int | None] = {}

    def stalled(
        self, *, fetching: bool, idle: bool, lagging: Iterable[Any], read_offsets: Mapping[Any, int | None]
    ) -> dict[Any, float]:
        """The partitions past the limit, with the seconds since their count started; empty otherwise."""
        now = self._clock()
        moved = {tp for tp, offset in read_offsets.items() if self._offsets.get(tp, _UNSEEN) != offset}
        self._offsets = dict(read_offsets)
        if not fetching or not (idle or moved):
            self._since.clear()
            return {}
        lagging = set(lagging) - moved
        self._since = {tp: self._since.get(tp, now) for tp in lagging}
        return {tp: now - since for tp, since in self._since.items() if now - since > self.limit_s}


def lagging_partitions(
    read_offsets: Mapping[Any, int | None], highwaters: Mapping[Any, int | None], earliest: Mapping[Any, int | None]
) -> list[Any]:
    """Partitions with a record beyond the last one read (or, before any read, beyond the earliest retained)."""
    lagging = []
    for tp, read in read_offsets.items():
        high = highwaters.get(tp)
        if high is None:
            continue
        start = read + 1 if read is not None else (earliest.get(tp) or 0)
        if high > start:
            lagging.append(tp)
    return lagging


def _name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"


def partition_names(tps: Iterable[Any] | None) -> list[str] | None:
    return None if tps is None else sorted(_name(tp) for tp in tps)


def consumer_state(app: Any, tps: Iterable[Any], queues: Mapping[str, Any]) -> dict[str, Any]:
    """What holds records back, as far as Faust and aiokafka tell: for a log line, so every lookup is guarded."""
    consumer = app.consumer
    tps = sorted(tps, key=_name)
    state: dict[str, Any] = {
        "flow_active": consumer.flow_active,
        "flow_control_active": app.flow_control.is_active(),
        "rebalancing": app.rebalancing,
        "in_recovery": app.tables.recovery.in_recovery,
        "faust_paused": partition_names(getattr(consumer, "_paused_partitions", None)),
        "faust_active": partition_names(getattr(consumer, "_active_partitions", None)),
        "faust_buffer_full": partition_names(getattr(consumer, "_buffered_partitions", None)),
        "read_offsets": {_name(tp): consumer._read_offset.get(tp) for tp in tps},
        "committed_offsets": {_name(tp): consumer._committed_offset.get(tp) for tp in tps},
    }
    state["queues"] = {
        name: {
            "size": q.qsize(),
            "maxsize": q.maxsize,
            "pending_pressure_drops": len(getattr(q, "_pending_pressure_drop_callbacks", ())),
        }
        for name, q in queues.items()
    }
    try:
        aio = consumer._thread._ensure_consumer()
        assignment = aio._subscription.subscription.assignment
        state["aiokafka_paused"] = partition_names(aio.paused())
        state["aiokafka_reassignment_in_progress"] = aio._subscription.reassignment_in_progress
        partitions = {}
        for tp in tps:
            s = assignment.state_value(tp)
            partitions[_name(tp)] = (
                None
                if s is None
                else {
                    "paused": s.paused,
                    "has_valid_position": s.has_valid_position,
                    "awaiting_reset": s.awaiting_reset,
                    "position": s.position if s.has_valid_position else None,
                }
            )
        state["aiokafka_partitions"] = partitions
        fetcher = aio._fetcher
        state["aiokafka_fetch_task_done"] = fetcher._fetch_task.done()
        state["aiokafka_buffered"] = partition_names(fetcher._records)
    except Exception as exc:  # diagnostics only: a renamed private must not hide the stall it reports
        state["aiokafka_error"] = repr(exc)
    return state
