"""Procrastinate side of the queue benchmark.

Runs Procrastinate (3.x, psycopg connector) against the local PostgreSQL, in a
throw-away database created for the run and dropped afterwards, and measures:

* ``enqueued_per_s``: N no-op jobs deferred in batches of 500 with ``batch_defer_async``;
* ``completed_per_s``: N / wall time for a real Procrastinate worker
  (``run_worker_async(wait=False)``, ``concurrency`` async slots) to drain that backlog
  (the jobs table is ANALYZEd first, untimed, so the fetch query gets its steady-state plan);
* ``latency_p50_ms`` / ``latency_p99_ms``: enqueue -> start latency, measured separately with
  an idle worker (default LISTEN/NOTIFY + polling settings) while 200 jobs are deferred one
  at a time ~5 ms apart; measured from just before ``defer_async`` to the task body starting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, LiteralString

import procrastinate
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH_SIZE = 500
LATENCY_SAMPLES = 200
LATENCY_GAP_S = 0.005
WARMUP_JOBS = 5
WAIT_TIMEOUT_S = 60.0
NOOP_TASK = "queuebot_bench_noop"
PROBE_TASK = "queuebot_bench_probe"

Progress = Callable[[str], None]
# ``app.task(...)`` returns procrastinate.tasks.Task[...]; its generics add nothing here.
BenchTask = Any


def _not_main_module_warning(record: logging.LogRecord) -> bool:
    # Run standalone, the App is created from ``__main__`` and procrastinate warns that other
    # processes could not import its tasks. Worker and tasks live in this process: irrelevant.
    return getattr(record, "action", None) != "app_defined_in___main__"


@contextlib.contextmanager
def _quiet_procrastinate() -> Iterator[None]:
    """Hide procrastinate's INFO chatter (one line per job) even if the caller logs at INFO."""
    logger = logging.getLogger("procrastinate")
    blueprints_logger = logging.getLogger("procrastinate.blueprints")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    blueprints_logger.addFilter(_not_main_module_warning)
    try:
        yield
    finally:
        blueprints_logger.removeFilter(_not_main_module_warning)
        logger.setLevel(previous)


async def _execute(dsn: str, statement: sql.SQL | sql.Composed) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(statement)


async def _scalar(dsn: str, query: LiteralString, *params: object) -> Any:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        return None if row is None else row[0]


async def wait_until(
    predicate: Callable[[], bool], what: str, worker: asyncio.Task[None], *, timeout_s: float = WAIT_TIMEOUT_S
) -> None:
    """Poll ``predicate`` until true; fail fast if the worker died or it takes too long (shared by both
    sides of the benchmark)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if worker.done():
            worker.result()  # re-raise the worker's exception, if any
            raise RuntimeError(f"worker exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.001)


async def _wait_for_listener(dsn: str, db_name: str, worker: asyncio.Task[None]) -> None:
    """Wait until the worker's LISTEN connection is up, so no probe falls back to polling."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN %%'"
    while not await _scalar(dsn, query, db_name):
        if worker.done():
            worker.result()
            raise RuntimeError("procrastinate worker exited before listening")
        if time.monotonic() > deadline:
            raise TimeoutError("procrastinate worker never issued LISTEN")
        await asyncio.sleep(0.02)


async def _enqueue(noop: BenchTask, jobs: int) -> float:
    start = time.perf_counter()
    for first in range(0, jobs, BATCH_SIZE):
        batch = [{"i": i} for i in range(first, min(first + BATCH_SIZE, jobs))]
        await noop.batch_defer_async(*batch)
    return jobs / (time.perf_counter() - start)


async def _work_down(app: procrastinate.App, dsn: str, jobs: int, concurrency: int) -> float:
    start = time.perf_counter()
    # wait=False: the worker returns once a fetch finds nothing and its running jobs are done.
    await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
    elapsed = time.perf_counter() - start
    succeeded = await _scalar(
        dsn,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'succeeded'",
        NOOP_TASK,
    )
    if succeeded != jobs:
        raise RuntimeError(f"work-down finished with {succeeded}/{jobs} jobs succeeded")
    return jobs / elapsed


async def _measure_latency(
    app: procrastinate.App,
    probe: BenchTask,
    started: dict[int, float],
    dsn: str,
    db_name: str,
    concurrency: int,
) -> list[float]:
    """Return enqueue->start latencies in ms for LATENCY_SAMPLES jobs deferred one at a time."""
    worker = asyncio.create_task(
        app.run_worker_async(concurrency=concurrency, install_signal_handlers=False),
        name="procrastinate-latency-worker",
    )
    try:
        await _wait_for_listener(dsn, db_name, worker)
        for i in range(-WARMUP_JOBS, 0):  # warm the pool / code paths; not recorded
            await probe.defer_async(i=i)
            await wait_until(functools.partial(started.__contains__, i), "warm-up job", worker)
        started.clear()

        deferred: dict[int, float] = {}
        for i in range(LATENCY_SAMPLES):
            deferred[i] = time.perf_counter()
            await probe.defer_async(i=i)
            await asyncio.sleep(LATENCY_GAP_S)
        await wait_until(lambda: len(started) >= LATENCY_SAMPLES, "latency probes", worker)
    finally:
        # Cancelling run_worker_async is how procrastinate expects an embedded worker to be
        # stopped: it shuts down gracefully (waits for running jobs, unregisters), then re-raises.
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return [(started[i] - deferred[i]) * 1000.0 for i in range(LATENCY_SAMPLES)]


async def _run_in_database(
    dsn: str, db_name: str, jobs: int, concurrency: int, say: Progress
) -> dict[str, float]:
    started: dict[int, float] = {}
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=NOOP_TASK)
    async def noop(i: int) -> None:
        return None

    @app.task(name=PROBE_TASK)
    async def probe(i: int) -> None:
        started[i] = time.perf_counter()

    async with app.open_async():
        say("procrastinate: applying schema")
        await app.schema_manager.apply_schema_async()

        say(f"procrastinate: enqueueing {jobs} jobs in batches of {BATCH_SIZE}")
        enqueued_per_s = await _enqueue(noop, jobs)

        # Fresh table, no planner stats yet: the fetch-job query would sort the whole backlog on
        # every fetch (O(N) per job) until autovacuum happens to analyze it mid-run. A live
        # queue table always has stats, so give it some, outside the timed phases.
        await _execute(dsn, sql.SQL("ANALYZE procrastinate_jobs"))

        say(f"procrastinate: working down {jobs} jobs (concurrency={concurrency})")
        completed_per_s = await _work_down(app, dsn, jobs, concurrency)

        say(f"procrastinate: measuring enqueue->start latency over {LATENCY_SAMPLES} jobs")
        latencies = await _measure_latency(app, probe, started, dsn, db_name, concurrency)

    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "enqueued_per_s": enqueued_per_s,
        "completed_per_s": completed_per_s,
        "latency_p50_ms": cuts[49],
        "latency_p99_ms": cuts[98],
    }


async def run_procrastinate(
    jobs: int,
    *,
    admin_dsn: str = DEFAULT_ADMIN_DSN,
    concurrency: int = 10,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Benchmark Procrastinate in a fresh database (always dropped afterwards); see module doc."""
    if jobs < 1:
        raise ValueError("jobs must be >= 1")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    db_name = f"queuebot_bench_procrastinate_{os.getpid()}"
    dsn = make_conninfo(admin_dsn, dbname=db_name)
    with _quiet_procrastinate():
        say(f"procrastinate: creating database {db_name}")
        await _execute(admin_dsn, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
        try:
            return await _run_in_database(dsn, db_name, jobs, concurrency, say)
        finally:
            say(f"procrastinate: dropping database {db_name}")
            await _execute(
                admin_dsn,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)),
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000, help="number of no-op jobs (default 2000)")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency (default 10)")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN, help="DSN allowed to CREATE DATABASE")
    args = parser.parse_args(argv)

    def to_stderr(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = asyncio.run(
        run_procrastinate(
            args.jobs, admin_dsn=args.admin_dsn, concurrency=args.concurrency, progress=to_stderr
        )
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
