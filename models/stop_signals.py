"""Stopping a model command on SIGTERM or Ctrl-C without raising into native code.

The usual way to stop Python on a signal is an exception from the handler (KeyboardInterrupt). During OpenVINO's
model conversion that is unsafe: its C++ calls back into Python (telemetry, the PyTorch frontend), and an exception
raised there either aborts the process (std::terminate, status 134, half-built files left behind) or is caught and
lost (measured: SIGTERMs at 0.6-1.5 s into `defectstream quantize` gave 134, 143 and 0). Inside
:class:`ExitOnStopSignals` a signal instead runs a cleanup and ends the process at once with 128 + the signal,
until the work is put in place (:meth:`ExitOnStopSignals.finishing`): from then on the command completes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitOnStopSignals:
    def __init__(self, cleanup: Callable[[], None], what: str):
        self.cleanup = cleanup
        self.what = what
        self._previous: dict[int, object] = {}
        self._finishing = False

    def __enter__(self) -> ExitOnStopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def finishing(self) -> None:
        """From here on the command completes: it is putting finished work in place (renames that must not be cut
        in two), and exiting 143 afterwards would tell a supervisor that a complete result is missing."""
        self._finishing = True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._finishing:
            name = signal.Signals(signum).name
            print(f"\n{self.what}: {name} while putting the result in place; finishing", file=sys.stderr, flush=True)
        else:
            self._exit(signum)

    def _exit(self, signum: int) -> None:
        self.cleanup()
        print(
            f"\n{self.what}: stopped by {signal.Signals(signum).name} before it finished", file=sys.stderr, flush=True
        )
        sys.stdout.flush()
        os._exit(128 + signum)
