"""Container health check: exit 0 when the worker answers /healthz on its web port, 1 otherwise.

Python rather than curl: the runtime image ships no curl, and the worker's port comes from the same setting the
worker reads (DEFECTSTREAM_WEB_PORT), so a changed port cannot leave the check probing the wrong one.
"""

import os
import sys
import urllib.request

port = int(os.environ.get("DEFECTSTREAM_WEB_PORT", "6066"))
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"healthz on port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
