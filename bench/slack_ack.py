"""Figures 3 and 4: Slack ack time under load, and click -> resume.

The bot under test is `queuebot run` in a process of its own (Bolt app, outbox delivery, workers and the
scheduler together, as deployed), pointed at a fake Slack (sandbox.FakeSlack) served by this process, which
also plays Slack's side of the traffic with requests signed exactly as Slack signs them
(sandbox.signed_requests). Job types: bench/slack_jobs.py.

* Figure 3, ack time: `--decisions` jobs each ask a question and their messages are posted; then a backlog
  of `--backlog` no-op jobs is enqueued (from this process, so the bot hears of it through NOTIFY) and, once
  the bot is working it down, `--decisions` clicks on those messages and as many `/queue` commands (add,
  stats, list, show) are sent all at once. Ack time: from sending a request to the bot's HTTP answer
  (Bolt answers a click when the listener calls ack(), before it acts; a command's answer carries its
  reply). Target p99 <= 100 ms (Slack allows 3 s).
* Figure 4, click -> resume: with the backlog gone, `--resume-samples` decisions are clicked one at a time;
  from sending the click to the job being claimed again (its second `claimed` event, written with the
  bot's clock; both processes read the same system clock). Target p50 <= 50 ms. The same figure is also
  reported for the clicks of the burst.

    .venv/bin/python bench/slack_ack.py [--backlog 10000] [--decisions 100] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `import bot`, `import store`, `import bench`

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import sqlalchemy as sa

from bench import slack_jobs
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
from bot.engine import Engine
from bot.jobtypes import registry
from bot.settings import load_config
from bot.slack_app import EVENTS_PATH
from bot.wakeup import Wakeup
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests, SlackRequest
from store import Store
from store.schema import decisions, events, jobs

CHANNEL = "C0QUEUE001"
CLICKER = "UREVIEW001"
TARGET_ACK_P99_MS = 100.0
#: No-op jobs the bot works through before the measured backlog, as a bot that has been running has.
WARMUP_BACKLOG = 500
TARGET_RESUME_P50_MS = 50.0
WAIT_TIMEOUT_S = 300.0
REPO = Path(__file__).resolve().parents[1]
CONFIG = f"""
job_modules = ["bench.slack_jobs"]
admins = ["UADMIN0001"]
default_channel = "{CHANNEL}"

[lanes]
fast = 8
normal = 4
heavy = 1
{slack_jobs.BACKLOG_LANE} = 100
"""


@dataclass
class Sent:
    kind: str
    ack_ms: float
    status: int
    sent_at: float  # wall clock, for click -> resume
    answered: bool = True  # the answer carried a body (a command's reply in its acknowledgement)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait(what: str, check: Any, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def running_bot(
    url: str, fake: FakeSlack, directory: Path, profile: str | None = None
) -> AsyncIterator[str]:
    """`queuebot run` in a process of its own; yields its base URL and stops it with SIGTERM. With
    `profile`, the bot runs under pyinstrument, which writes its report there when the bot stops."""
    port = _free_port()
    config = directory / "queuebot.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": url,
        "QUEUEBOT_CONFIG": str(config),
        "SLACK_BOT_TOKEN": fake.token,
        "SLACK_SIGNING_SECRET": fake.signing_secret,
        "SLACK_API_URL": fake.api_url,
        "PORT": str(port),
    }
    log = (directory / "bot.log").open("wb")
    command = [str(Path(sys.executable).parent / "queuebot"), "run"]
    if profile:
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", profile, *command]
    bot = await asyncio.create_subprocess_exec(*command, env=env, cwd=directory, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                if bot.returncode is not None:
                    raise RuntimeError(f"the bot exited: see {directory / 'bot.log'}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as response:
                        return response.status == 200
                return False

            await _wait("the bot to serve", healthy)
        say(f"bot: serving at {base} (pid {bot.pid})")
        directory.joinpath("bot.pid").write_text(str(bot.pid))
        yield base
    finally:
        if bot.returncode is None:
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(bot.wait(), timeout=30)
            except TimeoutError:
                bot.kill()
                await bot.wait()
        log.close()


async def _scalar(store: Store, query: sa.Select[Any]) -> int:
    async with store.db.read() as conn:
        return int(await conn.scalar(query) or 0)


async def _ask(engine: Engine, count: int, first: int) -> list[int]:
    """Enqueue `count` asking jobs; returns their ids once every question is posted in Slack."""
    new = [engine.new_job(slack_jobs.ASK_TYPE, {"i": first + i}, channel=CHANNEL) for i in range(count)]
    ids = [item.job.id for item in await engine.enqueue_many(new, actor="bench")]
    posted = (
        sa.select(sa.func.count())
        .select_from(decisions)
        .where(decisions.c.job_id.in_(ids), decisions.c.message_ts.is_not(None))
    )

    async def all_posted() -> bool:
        return await _scalar(engine.store, posted) == count

    await _wait(f"{count} questions to be posted", all_posted)
    return ids


async def _message_ts(store: Store, job_ids: Sequence[int]) -> dict[int, str]:
    async with store.db.read() as conn:
        rows = await conn.execute(
            sa.select(decisions.c.job_id, decisions.c.message_ts).where(decisions.c.job_id.in_(job_ids))
        )
        return {row.job_id: str(row.message_ts) for row in rows}


async def _resumed_at(store: Store, job_ids: Sequence[int]) -> dict[int, float]:
    """When each job was claimed for its second run (wall clock seconds)."""
    async with store.db.read() as conn:
        rows = await conn.execute(
            sa.select(events.c.job_id, events.c.at, events.c.details).where(
                events.c.job_id.in_(job_ids), events.c.kind == "claimed"
            )
        )
        return {row.job_id: row.at.timestamp() for row in rows if (row.details or {}).get("run") == 2}


async def _send(http: aiohttp.ClientSession, url: str, kind: str, request: SlackRequest) -> Sent:
    sent_at = time.time()
    start = time.perf_counter()
    async with http.post(url, data=request.body, headers=request.headers) as response:
        await response.read()
        status = response.status
    return Sent(kind, (time.perf_counter() - start) * 1000.0, status, sent_at)


class _Connection:
    """One connection opened before the burst, so the burst itself is only writes of ready bytes: the
    client's own work (an HTTP library builds and parses each request) would otherwise be timed as the
    bot's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> None:
        self.reader, self.writer, self.payload = reader, writer, payload

    @staticmethod
    def payload_of(base: str, request: SlackRequest) -> bytes:
        host = base.removeprefix("http://")
        head = [f"POST {EVENTS_PATH} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(request.body)}"]
        head += [f"{name}: {value}" for name, value in request.headers.items()]
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body

    @classmethod
    async def open(cls, base: str, payload: bytes) -> _Connection:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, payload)

    def send(self) -> tuple[float, float]:
        self.writer.write(self.payload)
        return time.time(), time.perf_counter()

    async def answer(self) -> tuple[int, float, bool]:
        """The status of the bot's answer, when its last byte arrived and whether it had a body."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")), 0
        )
        await self.reader.readexactly(length)
        done = time.perf_counter()
        self.writer.close()
        return int(lines[0].split()[1]), done, length > 0


async def _burst_client(spec_path: str) -> None:
    """The sending side of the burst, in a process of its own so that neither the fake Slack's work nor
    this benchmark's is timed as the bot's: open every connection, say so, wait for the word, write every
    request at once, print each answer's status and time."""
    spec = json.loads(Path(spec_path).read_text())
    payloads = [base64.b64decode(item) for item in spec["payloads"]]
    connections = [await _Connection.open(spec["base"], payload) for payload in payloads]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    answers_pending = []
    sent = []
    start, every_s = time.perf_counter(), spec["spread_s"] / len(connections)
    for n, connection in enumerate(connections):
        if every_s and (wait_s := start + n * every_s - time.perf_counter()) > 0:
            await asyncio.sleep(wait_s)
        sent.append(connection.send())
        answers_pending.append(asyncio.create_task(connection.answer()))
    answers = await asyncio.gather(*answers_pending)
    results = [
        {"status": status, "ack_ms": (done - started) * 1000.0, "sent_at": sent_at, "answered": answered}
        for (sent_at, started), (status, done, answered) in zip(sent, answers, strict=True)
    ]
    print(json.dumps(results), flush=True)


class _BurstClient:
    """The client process of `_burst_client`: started (connections open) ahead of time, fired on cue."""

    def __init__(self, process: asyncio.subprocess.Process, kinds: list[str]) -> None:
        self.process, self.kinds = process, kinds

    @classmethod
    async def start(
        cls, base: str, requests: Sequence[tuple[str, SlackRequest]], directory: Path, spread_s: float
    ) -> _BurstClient:
        spec = directory / "burst.json"
        payloads = [
            base64.b64encode(_Connection.payload_of(base, request)).decode() for _, request in requests
        ]
        spec.write_text(json.dumps({"base": base, "payloads": payloads, "spread_s": spread_s}))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--burst-client",
            str(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        if (await process.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the burst client did not open its connections")
        return cls(process, [kind for kind, _ in requests])

    async def fire(self, bot_pid: int) -> dict[str, Any]:
        """Send every request at once; what was sent, and how long and how busy the bot and machine were
        until the last answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        cpu_before, busy_before, wall_before = _cpu_s(bot_pid), _machine_busy_s(), time.perf_counter()
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()
        results = json.loads(await self.process.stdout.readline())
        wall_s = time.perf_counter() - wall_before
        figures = {
            "burst_wall_s": wall_s,
            "bot_cpu_s_during_burst": _cpu_s(bot_pid) - cpu_before,
            "machine_cores_busy_during_burst": (_machine_busy_s() - busy_before) / wall_s,
        }
        await self.process.wait()
        sent = [
            Sent(kind, result["ack_ms"], result["status"], result["sent_at"], result["answered"])
            for kind, result in zip(self.kinds, results, strict=True)
        ]
        return {"sent": sent, **figures}


def _machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used so far (every core, not idle nor waiting)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commands(slack: SignedRequests, count: int, some_job: int) -> list[tuple[str, SlackRequest]]:
    texts = [
        f"add {slack_jobs.NOOP_TYPE} i={n}" if n % 5 < 2 else ("stats", "list", f"show Q-{some_job}")[n % 3]
        for n in range(count)
    ]
    return [
        (f"/queue {text.split()[0]}", slack.slash_command("UADMIN0001", text, channel=CHANNEL))
        for text in texts
    ]


async def _backlog(engine: Engine, count: int) -> None:
    for first in range(0, count, 1000):
        batch = [
            engine.new_job(slack_jobs.NOOP_TYPE, {"i": i}) for i in range(first, min(first + 1000, count))
        ]
        await engine.enqueue_many(batch, actor="bench")


async def _backlog_left(store: Store) -> int:
    return await _scalar(
        store,
        sa.select(sa.func.count())
        .select_from(jobs)
        .where(jobs.c.type == slack_jobs.NOOP_TYPE, jobs.c.state.in_(["ready", "running"])),
    )


async def burst(engine: Engine, fake: FakeSlack, base: str, args: Any) -> dict[str, Any]:
    """Figure 3: all clicks and commands at once while the workers drain the backlog."""
    store = engine.store
    say(f"burst: {args.clicks} questions posted first")
    ask_ids = await _ask(engine, args.clicks, 0)
    stamps = await _message_ts(store, ask_ids)
    url = base + EVENTS_PATH
    async with SignedRequests(fake, url) as slack:
        # A deployed bot has answered Slack before (Bolt checks its token once, on the first request).
        for _ in range(3):
            await slack.send(slack.slash_command("UADMIN0001", "help", channel=CHANNEL))
        requests = [
            ("click", slack.block_actions(CLICKER, "answer:yes", channel=CHANNEL, message_ts=stamps[job_id]))
            for job_id in ask_ids
        ]
        requests += _commands(slack, args.commands, ask_ids[0] if ask_ids else 1)
    client = await _BurstClient.start(base, requests, Path(args.workdir), args.spread)
    # A bot that has been running has its statements compiled and prepared: a small backlog first, drained.
    await _backlog(engine, WARMUP_BACKLOG)

    async def idle() -> bool:
        return await _backlog_left(store) == 0

    await _wait("the warm-up backlog to drain", idle)
    say(f"burst: enqueueing a backlog of {args.backlog:,} no-op jobs")
    await _backlog(engine, args.backlog)
    # Fire once the drain is under way: a tenth of the backlog done (at most a thousand jobs).
    under_way = int(args.backlog) - min(1000, max(1, int(args.backlog) // 10))

    async def draining() -> bool:
        return await _backlog_left(store) <= under_way

    await _wait("the bot to be well into the backlog", draining, every_s=0.002)
    left_before = await _backlog_left(store)
    when = f"over {args.spread:g}s" if args.spread else "at once"
    say(f"burst: {len(requests)} signed requests {when} ({left_before:,} backlog jobs left)")
    fired = await client.fire(args.bot_pid)
    sent: list[Sent] = fired.pop("sent")
    left_after = await _backlog_left(store)
    say(f"burst: answered; {left_after:,} backlog jobs left")
    if any(item.status != 200 for item in sent):
        raise RuntimeError(f"refused requests: {sorted({item.status for item in sent})}")

    async def drained() -> bool:
        return await _backlog_left(store) == 0

    await _wait("the backlog to drain", drained)
    resumed = await _resumed_at(store, ask_ids)
    clicks = [item for item in sent if item.kind == "click"]
    commands = [item for item in sent if item.kind != "click"]
    result: dict[str, Any] = {"all": percentiles([item.ack_ms for item in sent])}
    for key, items in (("clicks", clicks), ("commands", commands)):
        if len(items) >= 2:
            result[key] = percentiles([item.ack_ms for item in items])
    result |= {
        "backlog_left_before": left_before,
        "backlog_left_after": left_after,
        **fired,
    }
    by_job = dict(zip(ask_ids, clicks, strict=True))
    waits = [(resumed[job] - click.sent_at) * 1000.0 for job, click in by_job.items() if job in resumed]
    if len(waits) >= 2:
        result["click_to_resume_under_load"] = percentiles(waits)
    replies = await _command_replies(fake, [(sent[n], request) for n, (_, request) in enumerate(requests)])
    if len(replies) >= 2:
        result["command_replies"] = percentiles(replies)
        result["commands_answered_later"] = sum(1 for item in commands if not item.answered)
    return result


async def _command_replies(fake: FakeSlack, sent: Sequence[tuple[Sent, SlackRequest]]) -> list[float]:
    """When each command's reply reached the person (ms after sending): in its acknowledgement, or, for one
    acknowledged at once in a burst, when it arrived at the command's response_url."""
    replies, later = [], []
    for item, request in sent:
        if item.kind == "click":
            continue
        if item.answered:
            replies.append(item.ack_ms)
        else:
            later.append(
                (item, fake.response_urls.by_id[str(request.response_url).rstrip("/").rsplit("/", 1)[-1]])
            )

    async def all_replied() -> bool:
        return all(url.accepted for _, url in later)

    await _wait("the commands' replies", all_replied, every_s=0.01)
    return replies + [(url.accepted[0].time - item.sent_at) * 1000.0 for item, url in later]


async def one_by_one(engine: Engine, fake: FakeSlack, base: str, args: Any) -> dict[str, Any]:
    """Figure 4: clicks one at a time on an idle queue; click -> claimed again."""
    store = engine.store
    say(f"resume: {args.resume_samples} questions posted")
    ask_ids = await _ask(engine, args.resume_samples, 100_000)
    stamps = await _message_ts(store, ask_ids)
    waits = []
    async with (
        SignedRequests(fake, base + EVENTS_PATH) as slack,
        aiohttp.ClientSession() as http,
    ):
        for job_id in ask_ids:
            click = slack.block_actions(CLICKER, "answer:yes", channel=CHANNEL, message_ts=stamps[job_id])
            sent = await _send(http, base + EVENTS_PATH, "click", click)

            async def resumed(job_id: int = job_id) -> bool:
                return job_id in await _resumed_at(store, [job_id])

            await _wait(f"Q-{job_id} to resume", resumed, every_s=0.002)
            waits.append(((await _resumed_at(store, [job_id]))[job_id] - sent.sent_at) * 1000.0)
            await asyncio.sleep(args.gap)
    return {"click_to_resume": percentiles(waits)}


async def bench_backend(backend: str, args: Any) -> dict[str, Any]:
    async with (
        database_url(backend, args.admin_dsn, "slack") as url,
        FakeSlack() as fake,
    ):
        store = Store.connect(url)
        await store.migrate()
        with tempfile.TemporaryDirectory(prefix="queuebot_bench_bot_") as directory:
            config = Path(directory) / "queuebot.toml"
            config.write_text(CONFIG, encoding="utf-8")
            engine = Engine(store, load_config(config), types=registry, wakeup=Wakeup())
            args.workdir = directory
            args.bot_pid = 0
            try:
                profile = f"{args.profile_bot}.{backend}.txt" if args.profile_bot else None
                async with running_bot(url, fake, Path(directory), profile) as base:
                    args.bot_pid = int(Path(directory, "bot.pid").read_text())
                    loaded = await burst(engine, fake, base, args)
                    idle = await one_by_one(engine, fake, base, args)
            finally:
                await store.close()
    return {**loaded, **idle}


async def measure(args: Any) -> dict[str, Any]:
    report: dict[str, Any] = await report_header(args.admin_dsn)
    report["settings"] = {
        "backlog": args.backlog,
        "clicks": args.clicks,
        "commands": args.commands,
        "spread_s": args.spread,
        "resume_samples": args.resume_samples,
    }
    targets = {}
    for backend in args.backends.split(","):
        say(f"{backend}: starting")
        report[backend] = row = await bench_backend(backend, args)
        targets[f"{backend}_ack_p99_ms"] = {"target": TARGET_ACK_P99_MS, "measured": row["all"]["p99_ms"]}
        targets[f"{backend}_click_to_resume_p50_ms"] = {
            "target": TARGET_RESUME_P50_MS,
            "measured": row["click_to_resume"]["p50_ms"],
        }
    report["targets"] = settle_targets(targets)
    return report


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"Figure 3: ack time of {s['clicks']} clicks + {s['commands']} /queue commands sent "
        f"{'over ' + format(s['spread_s'], 'g') + 's' if s['spread_s'] else 'at once'} while "
        f"the workers drain {s['backlog']:,} jobs; figure 4: click -> job claimed again",
    ]
    header = f"{'backend / what':<42}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>6}"
    lines += [header, "-" * len(header)]
    for backend in ("sqlite", "postgres"):
        if backend not in report:
            continue
        row = report[backend]
        for key, label in (
            ("all", "ack, all requests"),
            ("clicks", "ack, clicks"),
            ("commands", "ack, commands"),
            ("command_replies", "commands' replies reach the person"),
            ("click_to_resume_under_load", "click -> resume, during the burst"),
            ("click_to_resume", "click -> resume, one at a time"),
        ):
            if key in row:
                p = row[key]
                lines.append(
                    f"{backend + ' ' + label:<42}{p['p50_ms']:>9.1f}{p['p99_ms']:>9.1f}{p['max_ms']:>9.1f}"
                    f"{p['samples']:>6}"
                )
        if "commands_answered_later" in row:
            lines.append(
                f"{backend}: {row['commands_answered_later']} commands were acknowledged at once and "
                "replied to through their response_url"
            )
        lines.append(
            f"{backend}: backlog left when the burst was sent {row['backlog_left_before']:,}, "
            f"when it was answered {row['backlog_left_after']:,}; the burst took {row['burst_wall_s']:.2f}s; "
            f"the bot used {row['bot_cpu_s_during_burst']:.2f}s of CPU meanwhile, and the machine "
            f"{row['machine_cores_busy_during_burst']:.1f} of its {report['machine']['nproc']} cores"
        )
    lines.append("")
    lines += target_lines(report)
    lines.append(machine_line(report))
    return "\n".join(lines)


def main() -> None:
    parser = base_parser("Figures 3 and 4: Slack ack time under load, click -> resume")
    parser.add_argument("--backlog", type=int, default=10_000, help="no-op jobs being drained (10000)")
    parser.add_argument("--clicks", type=int, default=100, help="clicks on decisions in the burst (100)")
    parser.add_argument("--commands", type=int, default=100, help="/queue commands in the burst (100)")
    parser.add_argument(
        "--spread", type=float, default=0.0, help="send the burst over this many seconds, evenly (0: at once)"
    )
    parser.add_argument("--resume-samples", type=int, default=50, help="one-at-a-time clicks (50)")
    parser.add_argument("--gap", type=float, default=0.02, help="pause between those clicks, s (0.02)")
    parser.add_argument("--backends", default="postgres,sqlite", help="postgres,sqlite (default both)")
    parser.add_argument(
        "--profile-bot", metavar="PREFIX", help="profile the bot with pyinstrument into PREFIX.BACKEND.txt"
    )
    parser.add_argument("--burst-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.burst_client:
        asyncio.run(_burst_client(args.burst_client))
        return
    if args.clicks + args.commands < 2 or args.resume_samples < 2:
        parser.error("the burst needs 2 requests or more, --resume-samples 2 or more")
    run_main(lambda: measure(args), render, as_json=args.json)


if __name__ == "__main__":
    main()
