"""Publishing the line-stats tables' closed windows: once each, again when late counts change one, again next round
when Kafka did not take it.

Kept apart from the Faust app (streams.worker.app), which calls :meth:`ClosedWindowPublisher.publish_closed` from a
1 s timer with what its tables hold, so the rules are testable without Faust or Kafka.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from schemas.records import LineStats
from streams.worker import stats

log = logging.getLogger(__name__)

# A table entry: (window size s, (line id, (window start s, window end s)), counts as stats.empty() makes them).
WindowEntry = tuple[float, tuple[str, tuple[float, float]], dict[str, Any]]


class ClosedWindowPublisher:
    """``publish(line id, record)`` sends one LineStats and returns None once Kafka has it, or why it does not."""

    def __init__(
        self,
        grace_s: float,
        publish: Callable[[str, LineStats], Awaitable[BaseException | object | None]],
        *,
        keep_s: float = math.inf,
    ):
        self.grace_s = grace_s
        self.keep_s = keep_s
        self._publish = publish
        # (window size, table key) -> the frame count last published for it. Readers keep the latest record per
        # window, so a window is published again only when its count changed.
        self._published: dict[tuple[float, tuple[str, tuple[float, float]]], int] = {}

    async def publish_closed(
        self, entries: Iterable[WindowEntry], now: float
    ) -> list[tuple[float, tuple[str, tuple[float, float]]]]:
        """Publish every window that closed at least ``grace_s`` before ``now`` and was not published with its
        current count; forget windows the tables no longer hold (expired).

        Returns the windows past their stay (``keep_s`` after their end), unpublished, for the caller to remove from
        its tables: Faust expires only the windows written in this process, and a table restores every window its
        changelog still has (a day) when it gets a partition, which would publish them all again and keep them for
        good. The owner before published them (or had ``keep_s`` to)."""
        live = set()
        past_stay = []
        for window_s, key, counts in entries:
            line_id, (start, _end) = key
            if start + window_s + self.keep_s <= now:
                past_stay.append((window_s, key))
                continue
            live.add((window_s, key))
            if start + window_s + self.grace_s > now or self._published.get((window_s, key)) == counts["frames"]:
                continue
            error = await self._publish(line_id, stats.to_record(line_id, window_s, start, counts))
            if error is not None:  # left unmarked: the next round publishes it again
                log.warning("line-stats: window %s of line %s not published: %s", start, line_id, error)
                continue
            self._published[(window_s, key)] = counts["frames"]
        for gone in set(self._published) - live:
            del self._published[gone]
        return past_stay
