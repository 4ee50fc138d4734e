"""Line heartbeats: how far each line's inspection has got, for the gates.

A part that passes inspection gets no reject command, so a gate alone cannot tell a line whose parts are all OK from
one that nobody is inspecting (workers down or backlogged, camera or broker down): both are quiet. After each batch
is delivered, the worker notes per line the newest capture time it has delivered a verdict for, and sends it at most
once an interval as a :class:`~schemas.records.LineHeartbeat`, keyed by the line's gate. The gate raises its alarm
when the newest of them falls behind its clock (streams.gate).

What this detects: a line that no worker is delivering verdicts for, or whose whole pool is far behind. What it
does not: one stuck worker (or partition) among healthy ones, whose share of the parts passes without a verdict
while the others' heartbeats keep the gate content. A hung stage call is covered by the worker's stage watchdog
(``stage_stall_limit_s``: it exits unacked, so the partitions move), a blocked event loop by its event-loop watchdog
(``loop_stall_limit_s``, streams.worker.loop_watch), any other stuck batch by its batch watchdog
(``batch_stall_limit_s``, streams.worker.batch_watch). A check from outside the worker would need a watermark per
frames partition (the newest over all workers cannot show it). A crashed worker shows up instead as late commands
once its partitions move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from schemas.records import InspectionResult, LineHeartbeat, RejectCommand
from streams.inspection import UNKNOWN_LINE, UNREADABLE_FRAME, Outgoing, gate_for_line


@dataclass
class _Line:
    inspected_until_ts_ns: int
    frames: int


class LineWatermarks:
    """Per line, the newest capture time with a delivered verdict, and the frames since the last heartbeat."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self._lines: dict[str, _Line] = {}

    def delivered(self, outgoing: list[Outgoing]) -> None:
        """Note a batch whose records Kafka has all acknowledged. A frame's verdict is its inspection result, or the
        fail-safe reject of a frame that could not be inspected; one without a line id has no gate to tell."""
        for o in outgoing:
            record = o.record
            if isinstance(record, InspectionResult) or (
                isinstance(record, RejectCommand)
                and record.reason == UNREADABLE_FRAME
                and record.line_id != UNKNOWN_LINE
            ):
                # Capped at the decision time: a camera whose clock runs ahead must not tell the gate that parts
                # not yet captured are inspected.
                self._note(record.line_id, min(record.capture_ts_ns, record.decided_ts_ns))

    def _note(self, line_id: str, capture_ts_ns: int) -> None:
        line = self._lines.get(line_id)
        if line is None:
            self._lines[line_id] = _Line(capture_ts_ns, 1)
        else:
            line.inspected_until_ts_ns = max(line.inspected_until_ts_ns, capture_ts_ns)
            line.frames += 1

    def heartbeats(self) -> list[LineHeartbeat]:
        """One heartbeat per line with verdicts delivered since the last call; a line without any gets none, and its
        gate sees its inspection fall behind."""
        now = time.time_ns()
        beats = [
            LineHeartbeat(
                line_id=line_id,
                gate_id=gate_for_line(line_id),
                worker_id=self.worker_id,
                inspected_until_ts_ns=line.inspected_until_ts_ns,
                frames=line.frames,
                sent_ts_ns=now,
            )
            for line_id, line in self._lines.items()
        ]
        self._lines.clear()
        return beats
