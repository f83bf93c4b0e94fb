"""Queue throughput benchmark: queuebot on SQLite and on PostgreSQL against Procrastinate.

For each queuebot backend (a temporary SQLite file; a fresh PostgreSQL database of its own, dropped at the
end) it measures, with N no-op jobs of a private job type in a lane of its own:

* ``enqueued_per_s``: N jobs written in batches through ``Engine.enqueue_many``;
* ``completed_per_s``: N / wall time for the real worker runtime (``Worker.run(until_idle=True)``) to work
  the backlog down, states and events recorded as usual (checked: exactly N jobs end ``completed``);
* ``latency_p50_ms`` / ``latency_p99_ms``: enqueue -> handler-start latency of 200 jobs enqueued one at a
  time, a few ms apart, into an idle queue watched by a running worker.

Procrastinate is measured the same way by ``bench/procrastinate_side.py`` on its own fresh database.

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
import json
import os
import platform
import signal
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from bench.procrastinate_side import run_procrastinate, wait_until
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.runtime import Worker
from bot.settings import Config
from bot.wakeup import Wakeup
from store import Store

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LANE = "bench"
NOOP_TYPE = "bench.noop"
PROBE_TYPE = "bench.probe"
ACTOR = "bench"
WARMUP_JOBS = 5
WAIT_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 2.0
#: What the issue asks of queuebot, as multiples of Procrastinate's completed/s.
TARGET_POSTGRES_RATIO = 3.0
TARGET_SQLITE_RATIO = 1.0

Progress = Callable[[str], None]


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


async def bench_sqlite(settings: BenchSettings, say: Progress) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="queuebot_bench_") as directory:
        path = Path(directory) / "queuebot.db"
        say(f"sqlite: database file {path}")
        return await bench_queuebot("sqlite", f"sqlite:///{path}", settings, say, analyze=False)


@contextlib.asynccontextmanager
async def _fresh_pg_database(admin_dsn: str, name: str, say: Progress) -> AsyncIterator[str]:
    """Create database `name`, yield its URL, and drop it afterwards whatever happened."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        say(f"postgres: creating database {name}")
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield make_url(admin_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        say(f"postgres: dropping database {name}")
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def bench_postgres(settings: BenchSettings, admin_dsn: str, say: Progress) -> dict[str, float]:
    async with _fresh_pg_database(admin_dsn, f"queuebot_bench_{os.getpid()}", say) as url:
        return await bench_queuebot("postgres", url, settings, say, analyze=True)


async def _postgres_version(admin_dsn: str) -> str:
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return "unreachable"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _machine(postgres_version: str) -> dict[str, Any]:
    memory_gb: float | None = None
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024**2, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gb": memory_gb,
        "cpu": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version,
        # Other work on the machine skews every figure; the 1-minute load average says how much there was.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


async def run_all(
    settings: BenchSettings, admin_dsn: str, backends: list[str], say: Progress
) -> dict[str, Any]:
    """Benchmark the chosen backends in turn; SIGTERM cancels the run (its databases are still dropped)."""
    current = asyncio.current_task()
    if current is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off Unix
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(await _postgres_version(admin_dsn)),
        "settings": asdict(settings),
    }
    if "sqlite" in backends:
        report["sqlite"] = await bench_sqlite(settings, say)
    if "postgres" in backends:
        report["postgres"] = await bench_postgres(settings, admin_dsn, say)
    if "procrastinate" in backends:
        report["procrastinate"] = await run_procrastinate(
            settings.jobs, admin_dsn=admin_dsn, concurrency=settings.procrastinate_concurrency, progress=say
        )
    if "procrastinate" in report:
        base = report["procrastinate"]["completed_per_s"]
        for backend in ("postgres", "sqlite"):
            if backend in report:
                report[f"ratio_{backend}_vs_procrastinate"] = report[backend]["completed_per_s"] / base
    report["elapsed_s"] = time.perf_counter() - start
    return report


def render_table(report: dict[str, Any]) -> str:
    header = f"{'backend':<14}{'enqueued/s':>12}{'completed/s':>13}{'p50 ms':>10}{'p99 ms':>10}"
    lines = [header, "-" * len(header)]
    for backend in ("sqlite", "postgres", "procrastinate"):
        if backend in report:
            row = report[backend]
            lines.append(
                f"{backend:<14}{row['enqueued_per_s']:>12.0f}{row['completed_per_s']:>13.0f}"
                f"{row['latency_p50_ms']:>10.2f}{row['latency_p99_ms']:>10.2f}"
            )
    lines.append("")
    targets = (("postgres", TARGET_POSTGRES_RATIO), ("sqlite", TARGET_SQLITE_RATIO))
    for backend, target in targets:
        ratio = report.get(f"ratio_{backend}_vs_procrastinate")
        if ratio is not None:
            verdict = "meets" if ratio >= target else "MISSES"
            lines.append(
                f"{backend} completed/s = {ratio:.2f}x procrastinate ({verdict} the {target:g}x target)"
            )
    machine = report["machine"]
    lines.append(
        f"{report['date']}, {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory_gb']} GB, "
        f"load {machine['loadavg_1m_at_start']} at start, "
        f"Python {machine['python']}, SQLite {machine['sqlite']}, PostgreSQL {machine['postgres']}; "
        f"{report['settings']['jobs']} jobs, {report['elapsed_s']:.0f}s in all"
    )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="queuebot (SQLite, PostgreSQL) vs Procrastinate throughput")
    parser.add_argument("--jobs", type=int, default=20000, help="no-op jobs per backend (default 20000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per enqueue_many call (default 1000)")
    parser.add_argument("--slots", type=int, default=100, help="worker slots of the bench lane (default 100)")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="worker poll interval, s (0.05)")
    parser.add_argument("--latency-samples", type=int, default=200, help="latency probes (default 200)")
    parser.add_argument("--latency-gap", type=float, default=0.005, help="gap between probes, s (0.005)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=10, help="its worker slots (10)")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN, help="DSN allowed to CREATE DATABASE")
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

    def to_stderr(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(run_all(settings, args.admin_dsn, args.backends.split(","), to_stderr))
    except (KeyboardInterrupt, asyncio.CancelledError):
        to_stderr("interrupted (the benchmark databases were removed)")
        raise SystemExit(130) from None
    print(json.dumps(report, indent=2) if args.json else render_table(report))


if __name__ == "__main__":
    main()
