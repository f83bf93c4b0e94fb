"""Fixtures: every store test runs on a real SQLite file and on a real PostgreSQL database of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from bot.engine import Engine
from bot.jobtypes import Registry, load_job_modules, registry
from bot.settings import Config, SchedulerConfig, WorkerConfig
from bot.wakeup import Wakeup
from store import Store
from store.schema import metadata

PG_ADMIN_URL = os.environ.get("QUEUEBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

load_job_modules([])


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"


async def _create_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _migrated(url: str) -> None:
    store = Store.connect(url)
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """One PostgreSQL database per test run, migrated once; None when PostgreSQL is unreachable."""
    name = f"queuebot_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_create_pg_database(name))
    except (OSError, asyncpg.PostgresError) as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is unreachable under CI: {exc}")
        yield None
        return
    asyncio.run(_migrated(_pg_url(name)))
    yield _pg_url(name)
    asyncio.run(_drop_pg_database(name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "queuebot.db"
    asyncio.run(_migrated(f"sqlite:///{path}"))
    return path


async def _truncate(store: Store) -> None:
    names = ", ".join(table.name for table in metadata.sorted_tables)
    async with store.db.write() as conn:
        await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, sqlite_template: Path, pg_database: str | None, tmp_path: Path
) -> AsyncIterator[Store]:
    """A clean, migrated store on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "queuebot.db"
        shutil.copy(sqlite_template, path)
        store = Store.connect(f"sqlite:///{path}")
    else:
        if pg_database is None:
            pytest.skip("PostgreSQL is not reachable at " + PG_ADMIN_URL)
        store = Store.connect(pg_database)
        await _truncate(store)
    try:
        yield store
    finally:
        await store.close()


def fast_config(**overrides: object) -> Config:
    """A config whose workers poll and heartbeat quickly, so tests finish fast."""
    values: dict[str, object] = {
        "worker": WorkerConfig(
            poll_interval_s=0.05, heartbeat_interval_s=0.1, heartbeat_timeout_s=5, idle_horizon_s=10
        ),
        "scheduler": SchedulerConfig(tick_s=0.1),
        "lanes": {"fast": 8, "normal": 4, "heavy": 2},
    }
    values.update(overrides)
    return Config.model_validate(values)


@pytest.fixture
def types() -> Registry:
    """The built-in job types plus room for a test's own."""
    fresh = Registry()
    for job_type in registry:
        fresh.add(job_type)
    return fresh


@pytest.fixture
def config() -> Config:
    return fast_config()


@pytest.fixture
def engine(store: Store, config: Config, types: Registry) -> Engine:
    return Engine(store, config, types=types, wakeup=Wakeup())


@pytest.fixture
def frozen_clock() -> Iterator[object]:
    """Freeze queuebot's clock (the event loop keeps real time); `.tick(seconds)` moves it on."""
    from freezegun import freeze_time

    with freeze_time("2026-06-01 12:00:00", real_asyncio=True) as frozen:
        yield frozen
