"""Engine creation and transactions for SQLite and PostgreSQL, with the quirks of each in one place."""

from __future__ import annotations

import asyncio
import time
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
#: A pooled PostgreSQL connection idle for longer than this is pinged before use (a restarted server leaves
#: dead connections behind); one returned more recently has just worked, and the ping's round trip would be
#: a third of a claim's.
PING_IF_IDLE_FOR_S = 1.0
_READ_ONLY = "queuebot_read_only"
_RETURNED_AT = "queuebot_returned_at"


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

    def __init__(self, url: str, *, pool_size: int = 20) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect: Dialect = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
        kwargs: dict[str, Any] = {}
        if self.dialect == "postgresql":
            # LIFO keeps the few connections a steady load needs warm, so they skip the idle ping.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size // 2, pool_use_lifo=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        # In-process SQLite writers queue here instead of spinning on the file lock.
        self._sqlite_write_lock = asyncio.Lock()
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        else:
            _ping_idle_connections(self.engine)

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
    async def write_one(self) -> AsyncIterator[AsyncConnection]:
        """A write that is a single statement. PostgreSQL runs one statement atomically on its own, so it goes
        without BEGIN and COMMIT (two round trips fewer); on SQLite it is an ordinary write transaction. Only
        for callers that issue exactly one statement."""
        if self.dialect == "sqlite":
            async with self.write() as conn:
                yield conn
        else:
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """For reading. On SQLite a read-only transaction (a deferred BEGIN, so readers never take the write
        lock) that sees one snapshot throughout. On PostgreSQL no transaction at all: under READ COMMITTED
        each statement takes its own snapshot anyway, so BEGIN and COMMIT would only cost two round trips."""
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
                return
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


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """SQLAlchemy's pool_pre_ping, but only for connections idle past PING_IF_IDLE_FOR_S: a dead one is
    replaced (and every older pooled connection with it) before the caller sees it."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < PING_IF_IDLE_FOR_S:
            return  # fresh from connect, or just used
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa.exc.InvalidatePoolError("pooled connection failed its ping") from exc


def constant(value: str) -> sa.ColumnElement[Any]:
    """A constant written into the SQL text rather than bound, for predicates a partial index has (`state =
    'ready'`): PostgreSQL may keep a generic plan for a prepared statement, in which a bound value cannot
    prove the index's predicate; picked while a table is small, such a plan then scans the whole table."""
    return sa.literal_column(f"'{value}'", sa.String)


def picked_ids(pick: sa.Select[Any], dialect: Dialect) -> sa.ColumnElement[bool]:
    """`jobs.id IN (pick)` for an UPDATE, where `pick` selects ids with a LIMIT. On PostgreSQL the pick is a
    MATERIALIZED CTE with SKIP LOCKED: an IN-subquery with LIMIT may be re-run by the planner and then
    hand out more rows than the limit. SQLite runs the subquery once under its write lock."""
    column = pick.selected_columns[0]
    if dialect == "postgresql":
        cte = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        return column.in_(sa.select(cte.c[column.name]))
    return column.in_(pick.scalar_subquery())
