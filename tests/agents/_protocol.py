"""What every test agent shares: writing one protocol message per line, reading answers, logging runs."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def send(kind: str, **fields: Any) -> None:
    """Write one JSON-lines protocol message on stdout."""
    sys.stdout.write(json.dumps({"type": kind, **fields}) + "\n")
    sys.stdout.flush()


def answers() -> dict[str, Any]:
    """The answers queuebot passed in durable mode, by decision id."""
    return dict(json.loads(os.environ.get("QUEUEBOT_ANSWERS") or "{}"))


def log_run(path: str | None, **facts: Any) -> None:
    """Append one line about this run to `path`, so a test can count runs and see what each one saw."""
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"pid": os.getpid(), **facts}) + "\n")
