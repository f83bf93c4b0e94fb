"""Says upstream asked it to slow down for the given number of seconds."""

from __future__ import annotations

import sys

from _protocol import send

send("progress", message="calling the model")
send("rate_limit", retry_after_seconds=float(sys.argv[1]))
