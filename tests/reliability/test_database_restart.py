"""Scenario 3, a database restart: while a `queuebot work` process runs jobs on a PostgreSQL cluster of the
test's own, every connection it holds is terminated (pg_terminate_backend), and later the server itself is
stopped and started again. The same process reconnects and finishes everything: every job completed, each
job's effect applied once, nothing left running, nothing dead."""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from store import Store
from store.models import NewJob
from store.schema import jobs
from store.states import JobState
from tests.helpers import wait_for
from tests.reliability.private_postgres import PrivatePostgres, postgres_bin_dir
from tests.reliability.processes import QueuebotProcess, free_port

pytestmark = pytest.mark.reliability

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
JOBS = int(os.environ.get("QUEUEBOT_RELIABILITY_RESTART_JOBS", "400"))
CONFIG = """
job_modules = ["tests.reliability.chaos_jobs"]

[lanes]
fast = 8

[worker]
poll_interval_s = 0.05
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 3

[scheduler]
tick_s = 0.1
"""
#: Each job sleeps this long before and after its effect, so the faults land mid-run.
WORK_S = 0.02
#: Generous: the whole run takes seconds; hitting it means the bot did not recover.
SETTLE_TIMEOUT_S = 120.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = postgres_bin_dir()
    missing = None
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        missing = "initdb/pg_ctl are not installed"
    elif os.geteuid() == 0 and not _has_user("postgres"):
        missing = "running as root, and there is no `postgres` OS user to run the server as"
    if missing is not None:
        if IN_CI:
            pytest.fail(f"cannot run a PostgreSQL of the test's own to restart: {missing}")
        pytest.skip(f"cannot run a PostgreSQL of the test's own to restart: {missing}")
    assert bin_dir is not None
    server = PrivatePostgres(bin_dir)
    try:
        server.init()
        for tries_left in reversed(range(3)):
            try:
                server.start()
                break
            except RuntimeError:  # the free port was taken meanwhile (other tests run alongside): another
                if not tries_left:
                    raise
                server.port = free_port()
        yield server
    finally:
        server.destroy()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


async def _counts(store: Store) -> dict[str, int] | None:
    """Job counts by state, or None while the database is away."""
    try:
        return (await store.jobs.stats()).states
    except (OSError, sa.exc.DBAPIError):
        return None


async def test_the_bot_reconnects_after_its_connections_are_killed_and_the_server_restarts(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    admin = await asyncpg.connect(private_postgres.admin_url, timeout=10)
    try:
        await admin.execute('CREATE DATABASE "queuebot"')
    finally:
        await admin.close()
    url = private_postgres.url("queuebot")
    store = Store.connect(url)
    (tmp_path / "queuebot.toml").write_text(CONFIG, encoding="utf-8")
    ledger = tmp_path / "effects.log"
    ledger.touch()
    worker: QueuebotProcess | None = None
    try:
        await store.migrate()
        job = NewJob(
            type="chaos.effect", lane="fast", input={"ledger": str(ledger), "work_s": WORK_S}, max_attempts=50
        )
        await store.jobs.enqueue([job] * JOBS, actor="test")
        worker = QueuebotProcess(tmp_path, url).start()

        async def completed_at_least(share: float) -> bool:
            assert worker is not None and worker.alive, worker.tail() if worker else ""
            counts = await _counts(store)
            return counts is not None and counts["completed"] >= JOBS * share and counts["running"] > 0

        await wait_for(lambda: completed_at_least(0.2), timeout_s=SETTLE_TIMEOUT_S)
        admin = await asyncpg.connect(private_postgres.admin_url, timeout=10)
        try:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = 'queuebot' AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        assert killed > 0

        await wait_for(lambda: completed_at_least(0.5), timeout_s=SETTLE_TIMEOUT_S)
        private_postgres.stop("fast")
        await asyncio.sleep(0.5)  # the bot finds no server for a while
        private_postgres.start()

        async def all_done() -> bool:
            assert worker is not None and worker.alive, worker.tail() if worker else ""
            counts = await _counts(store)
            return counts is not None and counts["completed"] + counts["dead"] == JOBS

        await wait_for(all_done, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.1)
        assert worker.alive, "the same process carried on after both faults"
        counts = {state: n for state, n in (await store.jobs.stats()).states.items() if n}
        dead = [(j.ref, j.reason) for j in await store.jobs.list(states=[JobState.DEAD])]
        assert counts == {JobState.COMPLETED.value: JOBS}, (counts, dead)
        applied = {int(line.split()[0]) for line in ledger.read_text(encoding="utf-8").splitlines()}
        assert len(applied) == JOBS
        async with store.db.read() as conn:
            retried = await conn.scalar(
                sa.select(sa.func.count()).select_from(jobs).where(jobs.c.attempts > 0)
            )
        print(
            f"\n[database restart] {killed} connections terminated, then the server restarted; "
            f"all {JOBS} jobs completed by the same process ({retried} after a retry), "
            "each effect applied once"
        )
    finally:
        if worker is not None:
            worker.stop()
        await store.close()
