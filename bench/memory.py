"""Figure 6, memory: the resident memory of a running bot holding 100,000 open jobs and 1,000 open decisions.

The bot is `queuebot run` in a process of its own, serving a fake Slack (as in bench/slack_ack.py). Its
database gets `--open - --decisions` open jobs written with plain SQL (ready but not due for a day,
pending, paused, scheduled retries, blocked, escalated, under review), then `--decisions` jobs that each ask
a question are enqueued and run by the bot, which posts every question to Slack. Meanwhile the scheduler
ticks every second over all of it; then someone opens the Home tab, runs `/queue stats` and `/queue list`,
and Prometheus scrapes /metrics. Measured from /proc: the bot's resident memory (VmRSS) after all that,
and its peak (VmHWM) over the whole run. Target (issue 6): <= 200 MB.

    .venv/bin/python bench/memory.py [--open 100000] [--decisions 1000] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bot`, `import store`, `import bench`

import asyncio
import tempfile
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import slack_jobs
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
from bench.slack_ack import CHANNEL, CONFIG, running_bot
from bot.engine import Engine
from bot.jobtypes import registry
from bot.settings import load_config
from bot.slack_app import EVENTS_PATH
from bot.wakeup import Wakeup
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from store import Store
from store.schema import decisions

TARGET_PEAK_MB = 200.0
#: States the open jobs are written in; none of them is due for a worker, so the count holds still.
OPEN_MIX = ("ready", "pending", "paused", "retry_scheduled", "blocked", "escalated", "needs_review")


def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def _load_open(conn: AsyncConnection, n: int) -> None:
    """`n` open jobs in one INSERT … SELECT over generated rows, none due for a day."""
    state = "CASE i % {k} {cases} END".format(
        k=len(OPEN_MIX), cases=" ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(OPEN_MIX))
    )
    if conn.dialect.name == "postgresql":
        rows, later, now = (
            "SELECT g AS i FROM generate_series(1, :n) AS g",
            "(now() AT TIME ZONE 'utc') + interval '1 day'",
            "(now() AT TIME ZONE 'utc')",
        )
        prefix = ""
    else:
        rows = "SELECT i FROM gen"
        later = "strftime('%Y-%m-%d %H:%M:%S', 'now', '+1 day') || '.000000'"
        now = "strftime('%Y-%m-%d %H:%M:%S', 'now') || '.000000'"
        prefix = "WITH RECURSIVE gen(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM gen WHERE i < :n) "
    await conn.execute(
        sa.text(
            f"{prefix}INSERT INTO jobs (type, lane, priority, input, owner, channel, state, attempts, "
            "max_attempts, run_seq, run_after, created_at, updated_at, sla_level, spend_usd, reason) "
            f"SELECT '{slack_jobs.NOOP_TYPE}', '{slack_jobs.BACKLOG_LANE}', i % 3, '{{\"i\": 0}}', "
            f"'UOWNER0001', '{CHANNEL}', state, 0, 5, 0, {later}, {now}, {now}, 0, 0, 'bench' "
            f"FROM (SELECT i, {state} AS state FROM ({rows}) AS r) AS g"
        ),
        {"n": n},
    )


async def _look_around(base: str, fake: FakeSlack) -> None:
    """What people and Prometheus do: the Home tab, /queue stats and list, a scrape of /metrics."""
    async with SignedRequests(fake, base + EVENTS_PATH) as slack:
        for request in (
            slack.app_home_opened("UADMIN0001"),
            slack.slash_command("UADMIN0001", "stats", channel=CHANNEL),
            slack.slash_command("UADMIN0001", "list", channel=CHANNEL),
        ):
            answer = await slack.send(request)
            if answer.status != 200:
                raise RuntimeError(f"the bot answered {answer.status}: {answer.text[:200]}")
    await fake.wait_for(lambda: fake.home_view("UADMIN0001") is not None, timeout=30)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as metrics:
        if metrics.status != 200:
            raise RuntimeError(f"/metrics answered {metrics.status}")
        await metrics.read()


async def bench_backend(backend: str, args: Any) -> dict[str, Any]:
    async with database_url(backend, args.admin_dsn, "memory") as url, FakeSlack() as fake:
        store = Store.connect(url)
        await store.migrate()
        plain = args.open - args.decisions
        say(f"{backend}: writing {plain:,} open jobs")
        async with store.db.write() as conn:
            await _load_open(conn, plain)
        with tempfile.TemporaryDirectory(prefix="queuebot_bench_bot_") as directory:
            config = Path(directory) / "queuebot.toml"
            config.write_text(CONFIG, encoding="utf-8")
            engine = Engine(store, load_config(config), types=registry, wakeup=Wakeup())
            try:
                async with running_bot(url, fake, Path(directory)) as base:
                    pid = int(Path(directory, "bot.pid").read_text())
                    at_start = _status_kb(pid)
                    say(f"{backend}: {args.decisions:,} jobs ask a question each")
                    for first in range(0, args.decisions, 500):
                        count = min(500, args.decisions - first)
                        new = [
                            engine.new_job(slack_jobs.ASK_TYPE, {"i": first + i}, channel=CHANNEL)
                            for i in range(count)
                        ]
                        await engine.enqueue_many(new, actor="bench")
                    posted = (
                        sa.select(sa.func.count())
                        .select_from(decisions)
                        .where(decisions.c.state == "open", decisions.c.message_ts.is_not(None))
                    )
                    while True:
                        async with store.db.read() as conn:
                            done = int(await conn.scalar(posted) or 0)
                        if done >= args.decisions:
                            break
                        await asyncio.sleep(0.2)
                    say(f"{backend}: every question posted; looking around and letting the scheduler tick")
                    await _look_around(base, fake)
                    await asyncio.sleep(args.settle)
                    at_end = _status_kb(pid)
            finally:
                await store.close()
    return {
        "rss_mb_at_start": at_start["VmRSS"] / 1024,
        "rss_mb_at_end": at_end["VmRSS"] / 1024,
        "peak_rss_mb": at_end["VmHWM"] / 1024,
    }


async def measure(args: Any) -> dict[str, Any]:
    report: dict[str, Any] = await report_header(args.admin_dsn)
    report["settings"] = {"open": args.open, "decisions": args.decisions, "settle_s": args.settle}
    targets = {}
    for backend in args.backends.split(","):
        report[backend] = await bench_backend(backend, args)
        targets[f"{backend}_peak_rss_mb"] = {
            "target": TARGET_PEAK_MB,
            "measured": report[backend]["peak_rss_mb"],
        }
    report["targets"] = settle_targets(targets)
    return report


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    header = f"{'backend':<12}{'RSS at start MB':>17}{'RSS at end MB':>15}{'peak MB':>10}"
    lines = [
        f"Figure 6: resident memory of the running bot with {s['open']:,} open jobs, "
        f"{s['decisions']:,} of them waiting on an open decision",
        header,
        "-" * len(header),
    ]
    for backend in ("sqlite", "postgres"):
        if backend in report:
            row = report[backend]
            lines.append(
                f"{backend:<12}{row['rss_mb_at_start']:>17.1f}{row['rss_mb_at_end']:>15.1f}{row['peak_rss_mb']:>10.1f}"
            )
    lines.append("")
    lines += target_lines(report)
    lines.append(machine_line(report))
    return "\n".join(lines)


def main() -> None:
    parser = base_parser("Figure 6: resident memory of the bot with many open jobs and decisions")
    parser.add_argument("--open", type=int, default=100_000, help="open jobs in all (default 100000)")
    parser.add_argument("--decisions", type=int, default=1000, help="of them, waiting on a decision (1000)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of scheduler ticks at the end (3)")
    parser.add_argument("--backends", default="postgres,sqlite", help="postgres,sqlite (default both)")
    args = parser.parse_args()
    if not 0 < args.decisions <= args.open:
        parser.error("--decisions must be between 1 and --open")
    run_main(lambda: measure(args), render, as_json=args.json)


if __name__ == "__main__":
    main()
