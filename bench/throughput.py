"""Figure 1, work-down throughput: queuebot on SQLite and on PostgreSQL against Procrastinate and against
the raw ceiling of the database itself.

For each queuebot backend (a temporary SQLite file; a fresh PostgreSQL database of its own, dropped at the
end) it measures, with N no-op jobs of a private job type in a lane of its own:

* ``ceiling_per_s``: N rows of a bare table worked down by a bare loop of batched
  ``UPDATE … WHERE id IN (SELECT … LIMIT slots [FOR UPDATE SKIP LOCKED])`` on one connection, straight on
  the driver: no events, no runtime, no SQLAlchemy; the distance to it is what queuebot's bookkeeping costs;

* ``enqueued_per_s``: N jobs written in batches through ``Engine.enqueue_many``;
* ``completed_per_s``: N / wall time for the real worker runtime (``Worker.run(until_idle=True)``) to work
  the backlog down, states and events recorded as usual (checked: exactly N jobs end ``completed``);
* ``latency_p50_ms`` / ``latency_p99_ms``: enqueue -> handler-start latency of 200 jobs enqueued one at a
  time, a few ms apart, into an idle queue watched by a running worker.

Procrastinate is measured the same way by ``bench/procrastinate_side.py`` on its own fresh database.
Targets (issue 6): PostgreSQL completed/s >= 10x Procrastinate's in the same run; SQLite >= 5,000/s.

    .venv/bin/python bench/throughput.py --jobs 20000 [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bot`, `import store`, `import bench`

import argparse
import asyncio
import contextlib
import functools
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from pydantic import BaseModel

from bench.common import (
    Progress,
    base_parser,
    database_url,
    machine_line,
    report_header,
    run_main,
)
from bench.common import say as to_stderr
from bench.procrastinate_side import run_procrastinate, wait_until
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.runtime import Worker
from bot.settings import Config
from bot.wakeup import Wakeup
from store import Store

LANE = "bench"
NOOP_TYPE = "bench.noop"
PROBE_TYPE = "bench.probe"
ACTOR = "bench"
WARMUP_JOBS = 5
WAIT_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 2.0
#: What issue 6 asks: PostgreSQL at 10x Procrastinate's completed/s, SQLite at 5,000 completed/s.
TARGET_POSTGRES_RATIO = 10.0
TARGET_SQLITE_PER_S = 5000.0


@dataclass(frozen=True)
class BenchSettings:
    jobs: int
    batch: int
    slots: int
    poll_interval_s: float
    latency_samples: int
    latency_gap_s: float
    procrastinate_concurrency: int


class BenchInput(BaseModel):
    i: int


def _bench_types(started: dict[int, float]) -> Registry:
    """A private registry: a no-op type for the backlog and a probe type that records when it starts."""
    types = Registry()

    @job_type(NOOP_TYPE, input=BenchInput, lane=LANE, into=types)
    async def noop(ctx: JobContext, data: BenchInput) -> None:
        return None

    @job_type(PROBE_TYPE, input=BenchInput, lane=LANE, into=types)
    async def probe(ctx: JobContext, data: BenchInput) -> None:
        started[data.i] = time.perf_counter()

    return types


def _bench_config(settings: BenchSettings) -> Config:
    return Config.model_validate(
        {
            "lanes": {LANE: settings.slots},
            "worker": {
                "poll_interval_s": settings.poll_interval_s,
                "heartbeat_interval_s": 2.0,
                "heartbeat_timeout_s": 60.0,
                "idle_horizon_s": 0.0,
            },
        }
    )


async def _enqueue_phase(engine: Engine, settings: BenchSettings, label: str, say: Progress) -> float:
    say(f"{label}: enqueueing {settings.jobs} jobs in batches of {settings.batch}")
    start = time.perf_counter()
    for first in range(0, settings.jobs, settings.batch):
        last = min(first + settings.batch, settings.jobs)
        batch = [engine.new_job(NOOP_TYPE, {"i": i}) for i in range(first, last)]
        await engine.enqueue_many(batch, actor=ACTOR)
    elapsed = time.perf_counter() - start
    say(f"{label}: enqueued {settings.jobs} in {elapsed:.2f}s")
    return settings.jobs / elapsed


async def _report_progress(worker: Worker, total: int, label: str, say: Progress, start: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        done = worker.completed_runs
        rate = done / (time.perf_counter() - start)
        say(f"{label}: {done}/{total} completed ({rate:.0f}/s so far)")


async def _work_down_phase(engine: Engine, settings: BenchSettings, label: str, say: Progress) -> float:
    say(f"{label}: working down {settings.jobs} jobs ({settings.slots} slots)")
    worker = Worker(engine, worker_id=f"bench-{label}")
    start = time.perf_counter()
    reporter = asyncio.create_task(_report_progress(worker, settings.jobs, label, say, start))
    try:
        await asyncio.wait_for(worker.run(until_idle=True), timeout=max(600.0, settings.jobs / 10))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    elapsed = time.perf_counter() - start
    stats = await engine.store.jobs.stats()
    completed = stats.states.get("completed", 0)
    others = {state: count for state, count in stats.states.items() if count and state != "completed"}
    if completed != settings.jobs or others:
        raise RuntimeError(
            f"{label}: work-down ended with {completed}/{settings.jobs} completed; others {others}"
        )
    say(f"{label}: completed {completed} in {elapsed:.2f}s")
    return settings.jobs / elapsed


async def _latency_phase(
    engine: Engine, started: dict[int, float], settings: BenchSettings, label: str, say: Progress
) -> list[float]:
    """Enqueue -> start latencies (ms) of jobs enqueued one at a time into an idle queue."""
    say(f"{label}: measuring enqueue->start latency over {settings.latency_samples} jobs")
    worker = Worker(engine, worker_id=f"bench-{label}-latency")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop), name=f"{label}-latency-worker")
    try:
        for i in range(-WARMUP_JOBS, 0):  # warm the pool and the code paths; not recorded
            await engine.enqueue(PROBE_TYPE, {"i": i}, actor=ACTOR)
            await wait_until(
                functools.partial(started.__contains__, i), "a warm-up job", task, timeout_s=WAIT_TIMEOUT_S
            )
        started.clear()
        enqueued: dict[int, float] = {}
        for i in range(settings.latency_samples):
            enqueued[i] = time.perf_counter()
            await engine.enqueue(PROBE_TYPE, {"i": i}, actor=ACTOR)
            await asyncio.sleep(settings.latency_gap_s)
        await wait_until(
            lambda: len(started) >= settings.latency_samples,
            "the latency probes",
            task,
            timeout_s=WAIT_TIMEOUT_S,
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=WAIT_TIMEOUT_S)
    return [(started[i] - enqueued[i]) * 1000.0 for i in range(settings.latency_samples)]


async def _analyze(store: Store) -> None:
    """A fresh table has no planner statistics; a live queue's has. Untimed, as on the Procrastinate side."""
    async with store.db.write() as conn:
        await conn.execute(sa.text("ANALYZE"))


async def bench_queuebot(
    label: str, url: str, settings: BenchSettings, say: Progress, *, analyze: bool
) -> dict[str, float]:
    """Run the three phases against a migrated store at `url` (which should be empty)."""
    started: dict[int, float] = {}
    store = Store.connect(url)
    try:
        say(f"{label}: migrating")
        await store.migrate()
        engine = Engine(store, _bench_config(settings), types=_bench_types(started), wakeup=Wakeup())
        enqueued_per_s = await _enqueue_phase(engine, settings, label, say)
        if analyze:
            await _analyze(store)
        completed_per_s = await _work_down_phase(engine, settings, label, say)
        latencies = await _latency_phase(engine, started, settings, label, say)
    finally:
        await store.close()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "enqueued_per_s": enqueued_per_s,
        "completed_per_s": completed_per_s,
        "latency_p50_ms": cuts[49],
        "latency_p99_ms": cuts[98],
    }


#: The bare table the ceiling loop works down: only what a claim needs, with the same partial index.
_CEILING_TABLE = """
CREATE TABLE ceiling_jobs (id {id_type} PRIMARY KEY, state VARCHAR(32) NOT NULL, lane VARCHAR(64) NOT NULL,
                           priority SMALLINT NOT NULL, run_after TIMESTAMP NOT NULL);
CREATE INDEX ix_ceiling_ready ON ceiling_jobs (lane, priority, run_after, id) WHERE state = 'ready';
"""
_CEILING_PICK = (
    "SELECT id FROM ceiling_jobs WHERE state = 'ready' AND lane = 'bench' "
    "ORDER BY priority, run_after, id LIMIT {limit}"
)


async def _postgres_ceiling(url: str, settings: BenchSettings, say: Progress) -> float:
    """The raw ceiling on PostgreSQL: one connection, autocommit, one UPDATE per batch of `slots` rows."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(_CEILING_TABLE.format(id_type="BIGSERIAL"))
        await conn.execute(
            "INSERT INTO ceiling_jobs (state, lane, priority, run_after) "
            "SELECT 'ready', 'bench', 1, now() FROM generate_series(1, $1)",
            settings.jobs,
        )
        await conn.execute("ANALYZE ceiling_jobs")
        claim = await conn.prepare(
            "UPDATE ceiling_jobs SET state = 'completed' WHERE id IN ("
            + _CEILING_PICK.format(limit="$1")
            + " FOR UPDATE SKIP LOCKED) RETURNING id"
        )
        say(f"postgres: ceiling loop over {settings.jobs} bare rows")
        start = time.perf_counter()
        done = 0
        while rows := await claim.fetch(settings.slots):
            done += len(rows)
        elapsed = time.perf_counter() - start
        await conn.execute("DROP TABLE ceiling_jobs")
    finally:
        await conn.close()
    if done != settings.jobs:
        raise RuntimeError(f"ceiling loop worked {done}/{settings.jobs} rows")
    return settings.jobs / elapsed


def _sqlite_ceiling(path: str, settings: BenchSettings) -> float:
    """The raw ceiling on SQLite: the stdlib driver, WAL, one BEGIN IMMEDIATE … COMMIT per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_CEILING_TABLE.format(id_type="INTEGER"))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO ceiling_jobs (state, lane, priority, run_after) VALUES ('ready', 'bench', 1, ?)",
            [("2026-01-01 00:00:00",)] * settings.jobs,
        )
        conn.execute("COMMIT")
        update = (
            "UPDATE ceiling_jobs SET state = 'completed' WHERE id IN ("
            + _CEILING_PICK.format(limit="?")
            + ") RETURNING id"
        )
        start = time.perf_counter()
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(update, (settings.slots,)).fetchall()
            conn.execute("COMMIT")
            if not rows:
                break
            done += len(rows)
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE ceiling_jobs")
    finally:
        conn.close()
    if done != settings.jobs:
        raise RuntimeError(f"ceiling loop worked {done}/{settings.jobs} rows")
    return settings.jobs / elapsed


async def bench_backend(
    backend: str, settings: BenchSettings, admin_dsn: str, say: Progress
) -> dict[str, float]:
    async with database_url(backend, admin_dsn, "throughput") as url:
        if backend == "sqlite":
            say(f"sqlite: ceiling loop over {settings.jobs} bare rows")
            ceiling = await asyncio.to_thread(_sqlite_ceiling, url.removeprefix("sqlite:///"), settings)
        else:
            ceiling = await _postgres_ceiling(url, settings, say)
        say(f"{backend}: ceiling {ceiling:,.0f} rows/s")
        figures = await bench_queuebot(backend, url, settings, say, analyze=backend == "postgres")
    return {"ceiling_per_s": ceiling, **figures}


async def run_all(
    settings: BenchSettings, admin_dsn: str, backends: list[str], say: Progress
) -> dict[str, Any]:
    """Benchmark the chosen backends in turn, each in a database of its own."""
    report: dict[str, Any] = {**await report_header(admin_dsn), "settings": asdict(settings)}
    for backend in ("sqlite", "postgres"):
        if backend in backends:
            report[backend] = await bench_backend(backend, settings, admin_dsn, say)
    if "procrastinate" in backends:
        report["procrastinate"] = await run_procrastinate(
            settings.jobs, admin_dsn=admin_dsn, concurrency=settings.procrastinate_concurrency, progress=say
        )
        base = report["procrastinate"]["completed_per_s"]
        for backend in ("postgres", "sqlite"):
            if backend in report:
                report[f"ratio_{backend}_vs_procrastinate"] = report[backend]["completed_per_s"] / base
    targets: dict[str, Any] = {}
    if "ratio_postgres_vs_procrastinate" in report:
        ratio = report["ratio_postgres_vs_procrastinate"]
        targets["postgres_vs_procrastinate"] = {"target": TARGET_POSTGRES_RATIO, "measured": ratio}
    if "sqlite" in report:
        targets["sqlite_completed_per_s"] = {
            "target": TARGET_SQLITE_PER_S,
            "measured": report["sqlite"]["completed_per_s"],
        }
    for target in targets.values():
        target["met"] = target["measured"] >= target["target"]
    report["targets"] = targets
    return report


def render_table(report: dict[str, Any]) -> str:
    header = (
        f"{'backend':<14}{'ceiling/s':>11}{'enqueued/s':>12}{'completed/s':>13}{'p50 ms':>9}{'p99 ms':>9}"
    )
    lines = ["Figure 1: work-down of no-op jobs (and enqueue->start latency on an idle queue)", header]
    lines.append("-" * len(header))
    for backend in ("sqlite", "postgres", "procrastinate"):
        if backend in report:
            row = report[backend]
            ceiling = f"{row['ceiling_per_s']:>11,.0f}" if "ceiling_per_s" in row else f"{'':>11}"
            lines.append(
                f"{backend:<14}{ceiling}{row['enqueued_per_s']:>12,.0f}{row['completed_per_s']:>13,.0f}"
                f"{row['latency_p50_ms']:>9.2f}{row['latency_p99_ms']:>9.2f}"
            )
    lines.append("")
    targets = report["targets"]
    if "postgres_vs_procrastinate" in targets:
        t = targets["postgres_vs_procrastinate"]
        lines.append(
            f"postgres completed/s = {t['measured']:.1f}x procrastinate "
            f"({'meets' if t['met'] else 'MISSES'} the {t['target']:g}x target)"
        )
    if "sqlite_completed_per_s" in targets:
        t = targets["sqlite_completed_per_s"]
        lines.append(
            f"sqlite completed/s = {t['measured']:,.0f} "
            f"({'meets' if t['met'] else 'MISSES'} the {t['target']:,.0f}/s target)"
        )
    for backend in ("sqlite", "postgres"):
        if backend in report:
            row = report[backend]
            share = row["completed_per_s"] / row["ceiling_per_s"]
            lines.append(f"{backend}: queuebot reaches {share:.0%} of the bare UPDATE loop's rate")
    lines.append(f"{machine_line(report)}; {report['settings']['jobs']} jobs per backend")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = base_parser("Figure 1: queuebot (SQLite, PostgreSQL) vs Procrastinate vs the raw ceiling")
    parser.add_argument("--jobs", type=int, default=20000, help="no-op jobs per backend (default 20000)")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_many call (default 1000)")
    parser.add_argument("--slots", type=int, default=100, help="worker slots of the bench lane (default 100)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="worker poll interval, s (0.05)")
    parser.add_argument("--latency-samples", type=int, default=200, help="latency probes (default 200)")
    parser.add_argument("--latency-gap", type=float, default=0.005, help="gap between probes, s (0.005)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=10, help="its worker slots (10)")
    parser.add_argument(
        "--backends",
        default="sqlite,postgres,procrastinate",
        help="comma-separated subset of sqlite,postgres,procrastinate (default all three)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.batch < 1 or args.slots < 1 or args.latency_samples < 2:
        parser.error("--jobs, --batch and --slots must be >= 1, --latency-samples >= 2")
    unknown = set(args.backends.split(",")) - {"sqlite", "postgres", "procrastinate"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    settings = BenchSettings(
        jobs=args.jobs,
        batch=args.batch,
        slots=args.slots,
        poll_interval_s=args.poll_interval,
        latency_samples=args.latency_samples,
        latency_gap_s=args.latency_gap,
        procrastinate_concurrency=args.procrastinate_concurrency,
    )
    backends = args.backends.split(",")
    run_main(lambda: run_all(settings, args.admin_dsn, backends, to_stderr), render_table, as_json=args.json)


if __name__ == "__main__":
    main()
