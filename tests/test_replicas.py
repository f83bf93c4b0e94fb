"""Replicas on one PostgreSQL: new work wakes a worker in another process through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bot.engine import Engine
from bot.runtime import Worker
from bot.settings import WorkerConfig
from bot.wakeup import RELISTEN_CHECK_S, PostgresListener, Wakeup
from store import Store
from store.states import JobState
from tests.conftest import fast_config
from tests.helpers import wait_for_state

#: Far longer than the wait below: only a NOTIFY can wake the worker in time.
SLOW_POLL_S = 60.0


@asynccontextmanager
async def replica(
    store: Store, engine: Engine, *, check_every_s: float = RELISTEN_CHECK_S
) -> AsyncIterator[tuple[Worker, PostgresListener]]:
    """A second process's worth of queuebot on the same database: its own pool, engine, worker and LISTEN;
    its poll is a minute away, so only a NOTIFY wakes it in time."""
    if not store.db.is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite runs in one process")
    replica_store = Store.connect(store.db.url)
    config = fast_config(worker=WorkerConfig(poll_interval_s=SLOW_POLL_S, heartbeat_interval_s=1))
    other = Engine(replica_store, config, types=engine.types, wakeup=Wakeup())
    listening = PostgresListener(replica_store, other.wakeup, check_every_s=check_every_s)
    await listening.start()
    stop = asyncio.Event()
    worker = Worker(other)
    running = asyncio.create_task(worker.run(stop=stop))
    try:
        yield worker, listening
    finally:
        stop.set()
        await running
        await listening.stop()
        await replica_store.close()


async def test_enqueue_on_one_replica_wakes_a_worker_on_another(store: Store, engine: Engine) -> None:
    async with replica(store, engine) as (worker, _):
        # A first job, claimed by the lane loop's opening claim, proves the loop runs; after it the loop
        # sleeps until woken (its poll is a minute away).
        first = (await engine.enqueue("demo.echo", {"text": "first"})).job.id
        await wait_for_state(engine, first, JobState.COMPLETED, timeout_s=10)
        job_id = (await engine.enqueue("demo.echo", {"text": "wake up"})).job.id
        job = await wait_for_state(engine, job_id, JobState.COMPLETED, timeout_s=10)
        assert job.claimed_by == worker.worker_id


async def test_the_listener_listens_again_after_the_database_drops_its_connection(
    store: Store, engine: Engine
) -> None:
    import sqlalchemy as sa

    from tests.helpers import wait_for

    async with replica(store, engine, check_every_s=0.05) as (worker, listener):
        first = (await engine.enqueue("demo.echo", {"text": "first"})).job.id
        await wait_for_state(engine, first, JobState.COMPLETED, timeout_s=10)
        async with store.db.write() as conn:  # the database drops the listening connection
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert killed == 1

        async def listening_again() -> bool:
            return listener.connections_opened == 2

        await wait_for(listening_again, timeout_s=10)
        job_id = (await engine.enqueue("demo.echo", {"text": "still heard"})).job.id
        job = await wait_for_state(engine, job_id, JobState.COMPLETED, timeout_s=10)
        assert job.claimed_by == worker.worker_id
