"""The batch watchdog: the worker's catch-all for batches that stop moving while everything else looks alive.

The other watchdogs each watch one place: a stage call (streams.worker.stages), the event loop
(streams.worker.loop_watch), reads from the partitions (streams.worker.fetch_watch), the consumer flow
(streams.worker.faust_fixes), Kafka's acknowledgements (streams.worker.delivery). A batch can still wait for ever
elsewhere without blocking the loop: an await on a future nobody completes, a lock nobody releases. The worker then
keeps its partitions and answers /healthz, and its share of the parts passes the gate without a verdict while the
other workers' line heartbeats keep the gate content. This watches the outcome instead of a place: how long the
oldest batch has gone without being delivered and acked, and how long frames have waited in the agent's queue with
no batch taken while the pipeline had room. Past the limit the worker exits unacked, as the other watchdogs do, and
another worker inspects the frames again.

What it does not see: frames already in Faust's take() buffer, when take() itself never hands them over and no more
frames arrive behind them (the queue is then empty).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from streams.worker.pipeline import BatchInFlight


class BatchWatchdog:
    """Fed one observation per check; returns why the worker's batches are stuck, or None.

    ``oldest``: the oldest batch in flight not yet delivered and acked (its ``taken_at`` on this watchdog's clock).
    ``frames_waiting``: frames wait in the agent's queue, outside rebalances and table recovery.
    ``room``: the pipeline can take another batch (when full, taking waits for the oldest batch, watched above).
    ``batches_taken``: how many batches the agent has taken so far.

    A pause of the whole process (SIGSTOP, a paused container or VM) is not taken for stuck batches: when this has
    not been called for half the limit, every count starts again from then."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic):
        self.limit_s = limit_s
        self._clock = clock
        self._taken: int | None = None
        self._waiting_since: float | None = None
        self._last_check: float | None = None
        self._resumed_at = float("-inf")

    def stuck(
        self, *, oldest: BatchInFlight | None, frames_waiting: bool, room: bool, batches_taken: int
    ) -> str | None:
        now = self._clock()
        if self._last_check is not None and now - self._last_check > self.limit_s / 2:
            self._resumed_at = now
            self._waiting_since = None
        self._last_check = now
        if not (frames_waiting and room):
            self._waiting_since = None
        elif batches_taken != self._taken or self._waiting_since is None:
            self._waiting_since = now
        self._taken = batches_taken
        if oldest is not None and now - max(oldest.taken_at, self._resumed_at) > self.limit_s:
            return (
                f"a batch of {oldest.frames} frames was taken {now - oldest.taken_at:.0f} s ago and is not yet "
                f"delivered and acked (step: {oldest.step})"
            )
        if self._waiting_since is not None and now - self._waiting_since > self.limit_s:
            return (
                f"frames have waited in the agent's queue for {now - self._waiting_since:.0f} s with room in the "
                "pipeline and no batch taken"
            )
        return None
