"""A worker process killed with SIGKILL mid-run loses nothing: the next worker reaps the orphan and runs
it again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.test_cli import QUEUEBOT, Queuebot

#: A short heartbeat timeout, so the orphan is reaped within the test.
CRASH_CONFIG = """
[worker]
poll_interval_s = 0.05
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 1

[scheduler]
tick_s = 0.1
"""
#: How long to wait for the first worker to pick the job up.
CLAIM_WAIT_S = 20.0


def test_a_killed_worker_s_job_is_reaped_and_completed_by_the_next(tmp_path: Path) -> None:
    (tmp_path / "queuebot.toml").write_text(CRASH_CONFIG, encoding="utf-8")
    cli = Queuebot(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'queuebot.db'}")
    job = cli.enqueue("demo.sleep", {"seconds": 1.5})
    env = {**os.environ, "DATABASE_URL": cli.database_url}
    worker = subprocess.Popen(
        [str(QUEUEBOT), "work"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + CLAIM_WAIT_S
        while json.loads(cli.ok("show", job, "--json"))["state"] != "running":
            assert time.monotonic() < deadline, "the first worker never claimed the job"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert json.loads(cli.ok("show", job, "--json"))["state"] == "running"  # orphaned: nobody heartbeats

    cli.ok("work", "--until-idle")
    view = json.loads(cli.ok("show", job, "--json"))
    assert view["state"] == "completed" and view["attempts"] == 1
    kinds = [event["kind"] for event in view["events"]]
    assert kinds.count("claimed") == 2 and "reaped" in kinds
