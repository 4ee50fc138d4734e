"""Model commands run as an operator (or Kubernetes) runs them: `defectstream <command>` in a process of its own."""

import signal
import subprocess
import sys
from collections.abc import Callable


def stop_with_sigterm(command: str, args: list[str], started: Callable[[subprocess.Popen], object]) -> None:
    """Run ``defectstream <command> <args>``, send SIGTERM once ``started(process)`` returns, and check the command
    stopped as it must: exit status 143, and a line saying it was stopped before it finished."""
    argv = [sys.executable, "-m", "streams.cli", command, *args]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            started(proc)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 143, err
    assert f"{command}: stopped by SIGTERM before it finished" in err
