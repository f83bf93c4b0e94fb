"""Reports progress, a plain-text line, evidence and cost, then a result describing what it was given."""

from __future__ import annotations

import argparse
import os

from _protocol import send

parser = argparse.ArgumentParser()
parser.add_argument("--usd", type=float, default=0.25)
args = parser.parse_args()

send("progress", message="reading the repository")
print("plain text is not a protocol message", flush=True)
send("evidence", summary="found 3 failing tests", details={"tests": ["a", "b", "c"], "summary": "3 of 120"})
send("cost", usd=args.usd)
send("mood", feeling="unknown to queuebot")
send(
    "result",
    result={
        "fixed": 3,
        "job": os.environ["QUEUEBOT_JOB_ID"],
        "attempt": os.environ["QUEUEBOT_ATTEMPT"],
        "mode": os.environ["QUEUEBOT_MODE"],
        "greeting": os.environ.get("GREETING"),
        "cwd": os.getcwd(),
    },
)
