"""Asks one question. Durable mode: uses the answer from QUEUEBOT_ANSWERS when there is one. Held mode (or
--after-ask wait): blocks reading stdin for the decision_response. Every run is logged to --runs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _protocol import answers, log_run, send

parser = argparse.ArgumentParser()
parser.add_argument("--id", default="deploy")
parser.add_argument("--options", nargs="+", default=["ship", "hold"])
parser.add_argument("--default")
parser.add_argument("--timeout", type=float, default=1800)
parser.add_argument("--runs")
parser.add_argument("--after-ask", choices=["wait", "exit"], default="wait")
parser.add_argument(
    "--spawn-child", action="store_true", help="start a long-lived child that inherits stdout and stderr"
)
args = parser.parse_args()

child_pid = None
if args.spawn_child:
    child_pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]).pid
known = answers()
log_run(args.runs, mode=os.environ["QUEUEBOT_MODE"], answers=known, child_pid=child_pid)

if args.id in known:
    send(
        "result",
        result={
            "answer": known[args.id]["answer"],
            "answered_by": known[args.id]["answered_by"],
            "source": known[args.id]["source"],
            "via": "env",
        },
    )
    sys.exit(0)

send("progress", message="about to ask")
send(
    "decision_request",
    decision_id=args.id,
    question=f"{args.id}: which way?",
    options=args.options,
    timeout_seconds=args.timeout,
    default=args.default,
)
if args.after_ask == "exit":
    sys.exit(0)
line = sys.stdin.readline()
if not line:
    sys.exit(0)  # stdin closed with no answer: no result, which queuebot reports
response = json.loads(line)
assert response["type"] == "decision_response" and response["decision_id"] == args.id, response
send(
    "result",
    result={
        "answer": response["answer"],
        "answered_by": response["answered_by"],
        "source": response["source"],
        "via": "stdin",
    },
)
