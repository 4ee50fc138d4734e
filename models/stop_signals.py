"""Stopping a model command on SIGTERM or Ctrl-C without raising into native code.

The usual way to stop Python on a signal is an exception from the handler (KeyboardInterrupt). During OpenVINO's
model conversion that is unsafe: its C++ calls back into Python (telemetry, the PyTorch frontend), and an exception
raised there either aborts the process (std::terminate, status 134, half-built files left behind) or is caught and
lost (measured: SIGTERMs at 0.6-1.5 s into `defectstream quantize` gave 134, 143 and 0). Inside
:class:`ExitOnStopSignals` a signal instead runs a cleanup and ends the process at once with 128 + the signal,
except while a step that must not be cut in two runs (:meth:`ExitOnStopSignals.deferred`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitOnStopSignals:
    def __init__(self, cleanup: Callable[[], None], what: str):
        self.cleanup = cleanup
        self.what = what
        self._previous: dict[int, object] = {}
        self._deferring = False
        self._pending: int | None = None

    def __enter__(self) -> ExitOnStopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal that arrives in here takes effect when the block is done."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            self._exit(self._pending)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._deferring:
            self._pending = signum
        else:
            self._exit(signum)

    def _exit(self, signum: int) -> None:
        self.cleanup()
        print(
            f"\n{self.what}: stopped by {signal.Signals(signum).name} before it finished", file=sys.stderr, flush=True
        )
        sys.stdout.flush()
        os._exit(128 + signum)
