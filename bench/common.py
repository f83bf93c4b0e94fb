"""What every benchmark script shares: throw-away stores on SQLite and PostgreSQL, the machine and date
printed with every figure, percentiles, progress on stderr, and a main() that removes what it created even
when interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

Progress = Callable[[str], None]


def say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the figures (or the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (and the worst) of a list of milliseconds."""
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50_ms": cuts[49], "p99_ms": cuts[98], "max_ms": max(samples_ms), "samples": len(samples_ms)}


def verdict(value: float, target: float, *, at_most: bool) -> str:
    met = value <= target if at_most else value >= target
    return "meets" if met else "MISSES"


@contextlib.asynccontextmanager
async def fresh_pg_database(admin_dsn: str, name: str) -> AsyncIterator[str]:
    """Create database `name`, yield its URL, and drop it afterwards whatever happened."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        say(f"postgres: creating database {name}")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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


@contextlib.asynccontextmanager
async def database_url(backend: str, admin_dsn: str, tag: str) -> AsyncIterator[str]:
    """An empty database of its own for one benchmark: a temporary SQLite file or a fresh PostgreSQL
    database (dropped at the end)."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="queuebot_bench_") as directory:
            path = Path(directory) / "queuebot.db"
            say(f"sqlite: database file {path}")
            yield f"sqlite:///{path}"
    else:
        async with fresh_pg_database(admin_dsn, f"queuebot_bench_{tag}_{os.getpid()}") as url:
            yield url


async def postgres_version(admin_dsn: str) -> str:
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return "unreachable"
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine(postgres: str) -> dict[str, Any]:
    """What the figures were measured on; the load average says how busy the machine was."""
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
        "postgres": postgres,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


async def report_header(admin_dsn: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(await postgres_version(admin_dsn)),
    }


def settle_targets(targets: dict[str, dict[str, Any]], *, at_most: bool = True) -> dict[str, dict[str, Any]]:
    """Mark each target met or not (`measured` at most, or with `at_most=False` at least, `target`)."""
    for target in targets.values():
        measured, wanted = target["measured"], target["target"]
        target["met"] = measured <= wanted if at_most else measured >= wanted
    return targets


def target_lines(report: dict[str, Any], *, digits: int = 1, unit: str = "") -> list[str]:
    """One line per target: its name, the measured value and whether it meets the (at most) target."""
    return [
        f"{name.replace('_', ' ')}: {target['measured']:.{digits}f}{unit} "
        f"({'meets' if target['met'] else 'MISSES'} the <= {target['target']:g}{unit} target)"
        for name, target in report["targets"].items()
    ]


def machine_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    return (
        f"{report['date']}, {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, "
        f"load {m['loadavg_1m_at_start']} at start, Python {m['python']}, SQLite {m['sqlite']}, "
        f"PostgreSQL {m['postgres']}; {report.get('elapsed_s', 0):.0f}s in all"
    )


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN, help="DSN allowed to CREATE DATABASE")
    return parser


def run_main(
    measure: Callable[[], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    *,
    as_json: bool,
) -> None:
    """Run a benchmark, print its table or JSON; SIGTERM and Ctrl-C cancel it cleanly (what it created is
    removed on the way out)."""

    async def main() -> dict[str, Any]:
        current = asyncio.current_task()
        if current is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
        start = time.perf_counter()
        report = await measure()
        report["elapsed_s"] = round(time.perf_counter() - start, 1)
        return report

    try:
        report = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted (the benchmark databases were removed)")
        raise SystemExit(130) from None
    print(json.dumps(report, indent=2) if as_json else render(report))
