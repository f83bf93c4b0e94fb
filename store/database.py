"""Engine creation and transactions for SQLite and PostgreSQL, with the quirks of each in one place."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from store.errors import ConfigError

Dialect = Literal["sqlite", "postgresql"]

#: How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "queuebot_read_only"


def normalize_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async drivers queuebot uses."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        shown = url.split("@", 1)[-1] if "@" in url else url  # never echo a password
        raise ConfigError(f"DATABASE_URL is not a database URL (…{shown})") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(f"DATABASE_URL must be a sqlite:// or postgresql:// URL, not {backend}://")


class Database:
    """One engine and the right way to open read and write transactions on it."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect: Dialect = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
        kwargs: dict[str, Any] = {}
        if self.dialect == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        # In-process SQLite writers queue here instead of spinning on the file lock.
        self._sqlite_write_lock = asyncio.Lock()
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite, an ordinary one on PostgreSQL."""
        if self.dialect == "sqlite":
            async with self._sqlite_write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a deferred BEGIN on SQLite, so readers never take the write lock)."""
        async with self.engine.connect() as conn:
            await conn.execution_options(**{_READ_ONLY: True})
            async with conn.begin():
                yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    # The driver's own transaction handling would BEGIN lazily and DEFERRED; we issue BEGIN ourselves so a
    # writer holds the lock from its first statement (no upgrade deadlocks between readers turned writers).
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def picked_ids(pick: sa.Select[Any], dialect: Dialect) -> sa.ColumnElement[bool]:
    """`jobs.id IN (pick)` for an UPDATE, where `pick` selects ids with a LIMIT. On PostgreSQL the pick is a
    MATERIALIZED CTE with SKIP LOCKED: an IN-subquery with LIMIT may be re-run by the planner and then
    hand out more rows than the limit. SQLite runs the subquery once under its write lock."""
    column = pick.selected_columns[0]
    if dialect == "postgresql":
        cte = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        return column.in_(sa.select(cte.c[column.name]))
    return column.in_(pick.scalar_subquery())
