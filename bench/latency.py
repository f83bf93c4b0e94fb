"""Figure 2, enqueue -> start latency of a single job on an idle queue.

* in process: one queuebot process enqueues probe jobs one at a time (``Engine.enqueue``, a few ms apart)
  while its own worker waits; the enqueue wakes the worker directly. Measured from just before the
  ``enqueue`` call to the first line of the job's handler.
* across replicas (PostgreSQL): the probes are enqueued by this process, which runs no worker, and run by
  a second process (another replica) whose worker learns of them through ``LISTEN/NOTIFY``. The replica
  prints each probe's start on ``time.perf_counter()``, which is the system-wide monotonic clock on Linux,
  so both processes read the same clock.

Workers poll at the production default (1 s), so a wake-up that fails shows as a second of latency.
Targets (issue 6): in process on PostgreSQL p50 <= 2 ms and p99 <= 10 ms; across replicas p99 <= 50 ms.

    .venv/bin/python bench/latency.py [--samples 500] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bot`, `import store`, `import bench`

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

from pydantic import BaseModel

from bench.common import (
    base_parser,
    database_url,
    machine_line,
    percentiles,
    report_header,
    run_main,
    say,
    settle_targets,
    target_lines,
)
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.runtime import Worker
from bot.settings import Config
from bot.wakeup import PostgresListener, Wakeup
from store import Store

LANE = "bench"
PROBE_TYPE = "bench.probe"
WARMUP_JOBS = 50
#: The production default: only a wake-up (direct or NOTIFY) gets a job started sooner than this.
POLL_INTERVAL_S = 1.0
WAIT_TIMEOUT_S = 60.0
TARGET_IN_PROCESS_P50_MS = 2.0
TARGET_IN_PROCESS_P99_MS = 10.0
TARGET_REPLICAS_P99_MS = 50.0


class Probe(BaseModel):
    i: int


def _types(on_start: Any) -> Registry:
    types = Registry()

    @job_type(PROBE_TYPE, input=Probe, lane=LANE, into=types)
    async def probe(ctx: JobContext, data: Probe) -> None:
        on_start(data.i, time.perf_counter())

    return types


def _config() -> Config:
    return Config.model_validate(
        {
            "lanes": {LANE: 10},
            "worker": {"poll_interval_s": POLL_INTERVAL_S, "heartbeat_interval_s": 2.0},
        }
    )


async def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def _probe(engine: Engine, started: dict[int, float], samples: int, gap_s: float) -> list[float]:
    """Enqueue warm-ups, then `samples` probes one at a time; latencies in ms."""
    for i in range(-WARMUP_JOBS, 0):  # warm the pools and the code paths; not recorded
        await engine.enqueue(PROBE_TYPE, {"i": i}, actor="bench")
        await _wait_for(lambda i=i: i in started, "a warm-up probe")
    enqueued: dict[int, float] = {}
    for i in range(samples):
        enqueued[i] = time.perf_counter()
        await engine.enqueue(PROBE_TYPE, {"i": i}, actor="bench")
        await _wait_for(lambda i=i: i in started, f"probe {i}")
        await asyncio.sleep(gap_s)
    return [(started[i] - enqueued[i]) * 1000.0 for i in range(samples)]


async def in_process(url: str, samples: int, gap_s: float, label: str) -> dict[str, float]:
    started: dict[int, float] = {}
    store = Store.connect(url)
    try:
        await store.migrate()
        engine = Engine(store, _config(), types=_types(started.__setitem__), wakeup=Wakeup())
        stop = asyncio.Event()
        worker = asyncio.create_task(Worker(engine, worker_id=f"bench-{label}").run(stop=stop))
        say(f"{label}: {samples} probes, in process")
        try:
            latencies = await _probe(engine, started, samples, gap_s)
        finally:
            stop.set()
            await worker
    finally:
        await store.close()
    return percentiles(latencies)


async def _replica_main(url: str) -> None:
    """The other replica: a worker that hears of new work only through LISTEN/NOTIFY (or its 1 s poll)."""

    def report(i: int, at: float) -> None:
        print(json.dumps({"i": i, "at": at}), flush=True)

    store = Store.connect(url)
    engine = Engine(store, _config(), types=_types(report), wakeup=Wakeup())
    listener = PostgresListener(store, engine.wakeup)
    await listener.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), stop.set)  # parent closes stdin: stop
    print(json.dumps({"ready": True}), flush=True)
    try:
        await Worker(engine, worker_id="bench-replica").run(stop=stop)
    finally:
        await listener.stop()
        await store.close()


async def across_replicas(url: str, samples: int, gap_s: float) -> dict[str, float]:
    started: dict[int, float] = {}
    store = Store.connect(url)
    await store.migrate()
    replica = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--replica-of",
        url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert replica.stdout is not None and replica.stdin is not None

    async def read_starts() -> None:
        assert replica.stdout is not None
        while line := await replica.stdout.readline():
            message = json.loads(line)
            if "i" in message:
                started[message["i"]] = message["at"]
            else:
                started[-1000] = 0.0  # the replica is listening

    reader = asyncio.create_task(read_starts())
    try:
        await _wait_for(lambda: -1000 in started, "the replica to listen")
        # This process enqueues and runs no worker; its own wake-ups reach nobody.
        engine = Engine(store, _config(), types=_types(lambda i, at: None), wakeup=Wakeup())
        say(f"postgres: {samples} probes, enqueued here and run by another replica")
        latencies = await _probe(engine, started, samples, gap_s)
    finally:
        replica.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(replica.wait(), timeout=10)
        if replica.returncode is None:
            replica.kill()
            await replica.wait()
        reader.cancel()
        await store.close()
    return percentiles(latencies)


async def measure(args: Any) -> dict[str, Any]:
    report: dict[str, Any] = await report_header(args.admin_dsn)
    report["settings"] = {"samples": args.samples, "gap_s": args.gap, "poll_interval_s": POLL_INTERVAL_S}
    for backend in args.backends.split(","):
        async with database_url(backend, args.admin_dsn, "latency") as url:
            report[f"{backend}_in_process"] = await in_process(url, args.samples, args.gap, backend)
    if "postgres" in args.backends:
        async with database_url("postgres", args.admin_dsn, "replicas") as url:
            report["postgres_across_replicas"] = await across_replicas(url, args.samples, args.gap)
    targets: dict[str, Any] = {}
    if "postgres_in_process" in report:
        row = report["postgres_in_process"]
        targets["in_process_p50_ms"] = {"target": TARGET_IN_PROCESS_P50_MS, "measured": row["p50_ms"]}
        targets["in_process_p99_ms"] = {"target": TARGET_IN_PROCESS_P99_MS, "measured": row["p99_ms"]}
    if "postgres_across_replicas" in report:
        row = report["postgres_across_replicas"]
        targets["across_replicas_p99_ms"] = {"target": TARGET_REPLICAS_P99_MS, "measured": row["p99_ms"]}
    report["targets"] = settle_targets(targets)
    return report


def render(report: dict[str, Any]) -> str:
    header = f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'samples':>9}"
    lines = ["Figure 2: enqueue -> start latency, one job on an idle queue", header, "-" * len(header)]
    for key in ("sqlite_in_process", "postgres_in_process", "postgres_across_replicas"):
        if key in report:
            row = report[key]
            lines.append(
                f"{key.replace('_', ' '):<28}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
                f"{row['max_ms']:>9.2f}{row['samples']:>9}"
            )
    lines.append("")
    lines += target_lines(report, digits=2)
    lines.append(machine_line(report))
    return "\n".join(lines)


def main() -> None:
    parser = base_parser("Figure 2: enqueue -> start latency, in process and across replicas")
    parser.add_argument("--samples", type=int, default=500, help="probes per path (default 500)")
    parser.add_argument("--gap", type=float, default=0.005, help="idle time between probes, s (0.005)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres (default both)")
    parser.add_argument("--replica-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replica_of:
        asyncio.run(_replica_main(args.replica_of))
        return
    if args.samples < 2:
        parser.error("--samples must be >= 2")
    run_main(lambda: measure(args), render, as_json=args.json)


if __name__ == "__main__":
    main()
