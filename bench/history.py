"""Figure 5, history does not slow the present: a scheduler tick and `/queue stats` with 10,000 open jobs,
then again after 1,000,000 finished jobs (and an event each) were added.

Both sets are written with plain SQL (INSERT … SELECT over generated rows), as fast as the database takes
them: the open ones spread over the open states (ready, running with fresh heartbeats, waiting on 1,000 open
decisions, under review, pending, scheduled retries, blocked, escalated, paused), with SLAs and deadlines in
the future; the finished ones completed, dead, cancelled, expired or rejected over the last 30 days. The
finished counts (store/counts.py) are rebuilt after the load, as a migration does. PostgreSQL tables are
ANALYZEd after each load (autovacuum would); SQLite is left as a deployment leaves it.

Timed, each the median of `--repeat` runs:
* tick: every tick rule of the scheduler once, in order (reaper, decision timeouts, escalation ladders,
  deadlines, due retries, cron, idle job), as `scheduler.service.Scheduler` runs them;
* stats: the reply to `/queue stats` (handlers.commands.run_command), i.e. Engine.status().

Target (issue 6): each with the history at most 1.5x its time without. `--explain` prints the PostgreSQL
plans of the board's and the scans' queries with the history loaded.

    .venv/bin/python bench/history.py [--open 10000] [--finished 1000000] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bot`, `import store`, `import bench`

import statistics
import time
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.common import (
    base_parser,
    database_url,
    machine_line,
    report_header,
    run_main,
    say,
    settle_targets,
    target_lines,
)
from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.settings import Config
from bot.wakeup import Wakeup
from handlers.commands import run_command
from scheduler.service import Scheduler
from store import Store
from store.counts import recount_finished

TARGET_RATIO = 1.5
LANES = ("fast", "normal", "heavy")
#: Open states and their share of the open jobs (running ones heartbeat "now", so the reaper leaves them).
OPEN_MIX = (
    ("ready", 30),
    ("running", 10),
    ("waiting_decision", 10),
    ("needs_review", 5),
    ("pending", 10),
    ("retry_scheduled", 15),
    ("blocked", 5),
    ("escalated", 5),
    ("paused", 10),
)
FINISHED_MIX = (("completed", 85), ("dead", 5), ("cancelled", 5), ("expired", 3), ("rejected", 2))
HISTORY_DAYS = 30


class Empty(BaseModel):
    pass


def _types() -> Registry:
    types = Registry()
    for lane in LANES:

        @job_type(f"bench.{lane}", input=Empty, lane=lane, sla="1h", into=types)
        async def work(ctx: JobContext, data: Empty) -> None:
            return None

    @job_type("bench.nightly", input=Empty, lane="normal", cron="0 3 * * *", into=types)
    async def nightly(ctx: JobContext, data: Empty) -> None:
        return None

    return types


def _config() -> Config:
    return Config.model_validate(
        {
            "lanes": dict.fromkeys(LANES, 8),
            "idle": {"job_type": "bench.normal", "after": 600},
        }
    )


def _state_for(mix: tuple[tuple[str, int], ...], i: str, dialect: str) -> str:
    """A SQL CASE picking the state of generated row number `i` by the mix's shares."""
    total = sum(share for _, share in mix)
    cases, upper = [], 0
    for state, share in mix:
        upper += share
        cases.append(f"WHEN ({i}) % {total} < {upper} THEN '{state}'")
    return f"CASE {' '.join(cases)} END"


def _sql_for(dialect: str) -> dict[str, str]:
    """Dialect pieces: a row generator, "now minus N seconds" as stored (naive UTC), and JSON."""
    if dialect == "postgresql":
        return {
            "rows": "SELECT g::bigint AS i FROM generate_series(1, :n) AS g",
            "ago": "(now() AT TIME ZONE 'utc') - make_interval(secs => {s})",
            "later": "(now() AT TIME ZONE 'utc') + make_interval(secs => {s})",
            "json": "'{}'::jsonb",
            "details": "'{\"run\": 1}'::jsonb",
            "with": "",
        }
    # SQLAlchemy keeps SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return {
        "rows": "SELECT i FROM gen",
        "ago": "strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || ({s}) || ' seconds') || '.000000'",
        "later": "strftime('%Y-%m-%d %H:%M:%S', 'now', '+' || ({s}) || ' seconds') || '.000000'",
        "json": "'{}'",
        "details": "'{\"run\": 1}'",
        "with": "WITH RECURSIVE gen(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM gen WHERE i < :n) ",
    }


async def _load_open(conn: AsyncConnection, n: int) -> None:
    d = _sql_for(conn.dialect.name)
    state = _state_for(OPEN_MIX, "i", conn.dialect.name)
    now, soon, later = d["ago"].format(s="0"), d["later"].format(s="3600"), d["later"].format(s="86400")
    lane = "CASE i % 3 WHEN 0 THEN 'fast' WHEN 1 THEN 'normal' ELSE 'heavy' END"
    await conn.execute(
        sa.text(
            f"{d['with']}INSERT INTO jobs (type, lane, priority, input, owner, channel, state, attempts, "
            "max_attempts, run_seq, run_after, created_at, updated_at, started_at, heartbeat_at, claimed_by, "
            "deadline_at, sla_at, sla_level, sla_next_at, spend_usd, reason) "
            f"SELECT 'bench.' || lane, lane, i % 3, {d['json']}, 'UOWNER0001', 'C0QUEUE001', state, 0, 5, "
            f"CASE WHEN state = 'running' THEN 1 ELSE 0 END, "
            f"CASE WHEN state = 'retry_scheduled' THEN {soon} ELSE {now} END, {now}, {now}, "
            f"CASE WHEN state = 'running' THEN {now} END, CASE WHEN state = 'running' THEN {now} END, "
            f"CASE WHEN state = 'running' THEN 'bench-worker' END, "
            f"{later}, {soon}, 0, {soon}, 0, NULL "
            f"FROM (SELECT i, {lane} AS lane, {state} AS state FROM ({d['rows']}) AS rows) AS generated"
        ),
        {"n": n},
    )
    await conn.execute(
        sa.text(
            "INSERT INTO decisions (job_id, key, kind, question, options, allow_other, answerers, quorum, "
            "state, created_at, timeout_at, channel) "
            f"SELECT id, 'go', 'ask', 'Go on?', {d['json']}, false, {d['json']}, 1, 'open', {now}, {later}, "
            "channel FROM jobs WHERE state = 'waiting_decision'"
        )
    )


async def _load_finished(conn: AsyncConnection, n: int, first_id: int) -> None:
    d = _sql_for(conn.dialect.name)
    state = _state_for(FINISHED_MIX, "i", conn.dialect.name)
    spread = f"(i * 7919) % {HISTORY_DAYS * 86400}"
    at = d["ago"].format(s=spread)
    lane = "CASE i % 3 WHEN 0 THEN 'fast' WHEN 1 THEN 'normal' ELSE 'heavy' END"
    await conn.execute(
        sa.text(
            f"{d['with']}INSERT INTO jobs (type, lane, priority, input, state, attempts, max_attempts, "
            "run_seq, run_after, created_at, updated_at, started_at, heartbeat_at, claimed_by, sla_level, "
            "spend_usd, finished_at) "
            f"SELECT 'bench.' || lane, lane, 1, {d['json']}, state, 0, 5, 1, at, at, at, at, at, "
            "'bench-worker', 0, 0, at "
            f"FROM (SELECT i, {lane} AS lane, {state} AS state, {at} AS at FROM ({d['rows']}) AS rows) AS g"
        ),
        {"n": n},
    )
    await conn.execute(
        sa.text(
            "INSERT INTO events (job_id, at, actor, kind, from_state, to_state, details) "
            f"SELECT id, finished_at, 'bench-worker', state, 'running', state, {d['details']} "
            "FROM jobs WHERE id > :first"
        ),
        {"first": first_id},
    )
    await recount_finished(conn)


async def _max_id(store: Store) -> int:
    async with store.db.read() as conn:
        return int(await conn.scalar(sa.text("SELECT coalesce(max(id), 0) FROM jobs")) or 0)


async def _analyze(store: Store) -> None:
    if store.db.is_postgres:
        async with store.db.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(sa.text("VACUUM ANALYZE"))


async def _timed(action: Any, repeat: int) -> dict[str, float]:
    await action()  # warm the caches and the pool; not counted
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - start) * 1000.0)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples)}


async def _measure(engine: Engine, scheduler: Scheduler, repeat: int) -> dict[str, Any]:
    async def tick() -> None:
        for name, rule in scheduler.tick_rules.items():
            await scheduler._guarded(name, rule)

    async def stats() -> None:
        reply = await run_command(engine, "stats", user="UADMIN0001", channel="C0QUEUE001", trigger_id="t")
        assert "SLA breaches" in reply, reply

    rules = {}
    for name, rule in scheduler.tick_rules.items():

        async def one(name: str = name, rule: Any = rule) -> None:
            await scheduler._guarded(name, rule)

        rules[name] = (await _timed(one, max(3, repeat // 3)))["median_ms"]
    return {"tick": await _timed(tick, repeat), "stats": await _timed(stats, repeat), "tick_rules_ms": rules}


#: The queries whose plans matter here, as the store runs them (PostgreSQL EXPLAIN with the history).
EXPLAINED = {
    "stats: open jobs by state and lane": "SELECT state, lane, count(*) FROM jobs WHERE {open} "
    "GROUP BY state, lane",
    "stats: oldest waiting per state": "SELECT state, min(updated_at) FROM jobs WHERE {open} AND state IN "
    "('pending', 'ready', 'waiting_decision', 'needs_review', 'retry_scheduled', 'blocked', 'escalated', "
    "'paused') GROUP BY state",
    "stats: SLA breaches": "SELECT count(*) FROM jobs WHERE sla_at IS NOT NULL AND {open} AND sla_at < now()",
    "stats: finished counts": "SELECT lane, state, sum(jobs) FROM finished_counts GROUP BY lane, state",
    "tick: deadlines": "SELECT id FROM jobs WHERE deadline_at IS NOT NULL AND {open} "
    "AND deadline_at <= now() LIMIT 500 FOR UPDATE SKIP LOCKED",
    "tick: reaper": "SELECT * FROM jobs WHERE state = 'running' AND heartbeat_at < now() - interval '30s' "
    "LIMIT 500 FOR UPDATE SKIP LOCKED",
    "tick: escalation ladder": "SELECT id FROM jobs WHERE sla_next_at IS NOT NULL AND sla_next_at <= now() "
    "LIMIT 500 FOR UPDATE SKIP LOCKED",
    "tick: due retries": "SELECT id FROM jobs WHERE state = 'retry_scheduled' AND run_after <= now() "
    "LIMIT 1000",
    "tick: idle (anything busy?)": "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'ready') OR "
    "EXISTS (SELECT 1 FROM jobs WHERE state = 'running')",
}


async def _plans(store: Store) -> dict[str, str]:
    from store.schema import OPEN_CLAUSE

    plans = {}
    async with store.db.read() as conn:
        for name, query in EXPLAINED.items():
            rows = await conn.execute(sa.text("EXPLAIN " + query.format(open=OPEN_CLAUSE)))
            plans[name] = "\n".join(row[0] for row in rows)
    return plans


async def bench_backend(backend: str, args: Any) -> dict[str, Any]:
    async with database_url(backend, args.admin_dsn, "history") as url:
        store = Store.connect(url)
        try:
            await store.migrate()
            engine = Engine(store, _config(), types=_types(), wakeup=Wakeup())
            scheduler = Scheduler(engine)
            say(f"{backend}: writing {args.open:,} open jobs")
            async with store.db.write() as conn:
                await _load_open(conn, args.open)
            await _analyze(store)
            say(f"{backend}: timing a tick and /queue stats ({args.repeat} runs each)")
            present = await _measure(engine, scheduler, args.repeat)
            say(f"{backend}: writing {args.finished:,} finished jobs and their events")
            start = time.perf_counter()
            first = await _max_id(store)
            async with store.db.write() as conn:
                await _load_finished(conn, args.finished, first)
            say(f"{backend}: history written in {time.perf_counter() - start:.0f}s; analyzing")
            await _analyze(store)
            say(f"{backend}: timing again with the history")
            with_history = await _measure(engine, scheduler, args.repeat)
            plans = await _plans(store) if backend == "postgres" and args.explain else {}
        finally:
            await store.close()
    result: dict[str, Any] = {"open_only": present, "with_history": with_history}
    for what in ("tick", "stats"):
        ratio = with_history[what]["median_ms"] / present[what]["median_ms"]
        result[f"{what}_ratio"] = ratio
    if plans:
        result["plans"] = plans
    return result


async def measure(args: Any) -> dict[str, Any]:
    report: dict[str, Any] = await report_header(args.admin_dsn)
    report["settings"] = {"open": args.open, "finished": args.finished, "repeat": args.repeat}
    targets = {}
    for backend in args.backends.split(","):
        report[backend] = await bench_backend(backend, args)
        for what in ("tick", "stats"):
            ratio = report[backend][f"{what}_ratio"]
            targets[f"{backend}_{what}_ratio"] = {"target": TARGET_RATIO, "measured": ratio}
    report["targets"] = settle_targets(targets)
    return report


def render(report: dict[str, Any]) -> str:
    settings = report["settings"]
    header = f"{'backend / action':<22}{'open only ms':>14}{'with history ms':>17}{'ratio':>8}"
    lines = [
        f"Figure 5: {settings['open']:,} open jobs, then {settings['finished']:,} finished ones added "
        f"(medians of {settings['repeat']} runs)",
        header,
        "-" * len(header),
    ]
    for backend in ("sqlite", "postgres"):
        if backend not in report:
            continue
        row = report[backend]
        for what in ("tick", "stats"):
            before, after = row["open_only"][what]["median_ms"], row["with_history"][what]["median_ms"]
            lines.append(
                f"{backend + ' ' + what:<22}{before:>14.2f}{after:>17.2f}{row[what + '_ratio']:>8.2f}"
            )
    lines.append("")
    lines += target_lines(report, digits=2, unit="x")
    for backend in ("sqlite", "postgres"):
        if backend in report:
            rules = report[backend]["with_history"]["tick_rules_ms"]
            lines.append(
                f"{backend} tick rules with history (ms): "
                + ", ".join(f"{k} {v:.2f}" for k, v in rules.items())
            )
    for name, plan in report.get("postgres", {}).get("plans", {}).items():
        lines += ["", f"-- {name}", plan]
    lines.append(machine_line(report))
    return "\n".join(lines)


def main() -> None:
    parser = base_parser("Figure 5: a scheduler tick and /queue stats with and without a large history")
    parser.add_argument("--open", type=int, default=10_000, help="open jobs (default 10000)")
    parser.add_argument("--finished", type=int, default=1_000_000, help="finished jobs (default 1000000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs of each action (default 30)")
    parser.add_argument("--backends", default="sqlite,postgres", help="sqlite,postgres (default both)")
    parser.add_argument("--explain", action="store_true", help="print PostgreSQL's plans of the queries")
    args = parser.parse_args()
    run_main(lambda: measure(args), render, as_json=args.json)


if __name__ == "__main__":
    main()
