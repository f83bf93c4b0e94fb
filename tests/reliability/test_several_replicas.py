"""Scenario 2, several replicas: three `queuebot run` processes share one PostgreSQL database and one
(fake) Slack workspace. No job runs twice, let alone at the same time; every time rule fires once per item
however many schedulers race for it (one DM per escalation level, one timeout per decision, one expiry per
job); and a decision clicked on one replica resumes its job, on whichever replica claims it, within a
second."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa

from bot.slack_app import EVENTS_PATH
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import SignedRequests
from store import Store, clock
from store.models import NewJob
from store.schema import decisions, events, jobs
from store.states import JobState
from tests.helpers import wait_for
from tests.reliability.processes import QueuebotProcess, free_port

pytestmark = pytest.mark.reliability

REPLICAS = 3
INTERVAL_JOBS = 300
WAITING_JOBS = 24
CHANNEL, OWNER, BACKUP = "C0QUEUE001", "UOWNER0001", "UREVIEW001"
CONFIG = f"""
job_modules = ["tests.reliability.chaos_jobs"]
default_channel = "{CHANNEL}"
backup = "{BACKUP}"

[lanes]
fast = 4

[worker]
poll_interval_s = 1.0
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 10

[scheduler]
tick_s = 0.2

[ladders.default]
levels = [{{ after = "0s", notify = ["owner"] }}, {{ after = "2s", notify = ["backup"] }}]
"""
#: The issue's bound: a decision clicked on one replica is running again within a second.
RESUME_WITHIN_S = 1.0
SETTLE_TIMEOUT_S = 60.0


@pytest.fixture
async def replicas(store: Store, tmp_path: Path) -> AsyncIterator[tuple[FakeSlack, list[str]]]:
    """Three `queuebot run` processes against the test's database and one fake Slack; yields the fake and
    each replica's /slack/events URL."""
    (tmp_path / "queuebot.toml").write_text(CONFIG, encoding="utf-8")
    async with FakeSlack() as fake:
        processes: list[QueuebotProcess] = []
        urls: list[str] = []
        try:
            for _ in range(REPLICAS):
                port = free_port()
                env = {
                    "SLACK_BOT_TOKEN": fake.token,
                    "SLACK_SIGNING_SECRET": fake.signing_secret,
                    "SLACK_API_URL": fake.api_url,
                    "PORT": str(port),
                }
                processes.append(QueuebotProcess(tmp_path, store.db.url, "run", env=env).start())
                urls.append(f"http://127.0.0.1:{port}")
            for process, url in zip(processes, urls, strict=True):
                await wait_for(lambda p=process, u=url: _healthy(p, u), timeout_s=30)
            yield fake, [url + EVENTS_PATH for url in urls]
        finally:
            statuses = [process.stop() for process in processes if process.proc is not None]
            logs = "".join(process.tail(1_000_000) for process in processes)
        assert statuses == [0] * REPLICAS, logs[-3000:]
        assert fake.token not in logs and fake.signing_secret not in logs


async def _healthy(process: QueuebotProcess, url: str) -> bool:
    assert process.alive, process.tail()
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as health:
            return health.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.parametrize(
    "store", ["postgres"], indirect=True
)  # replicas share PostgreSQL; SQLite is one host's
async def test_three_replicas_run_each_job_once_fire_each_rule_once_and_resume_decisions_quickly(
    store: Store, replicas: tuple[FakeSlack, list[str]], tmp_path: Path
) -> None:
    fake, event_urls = replicas
    log = tmp_path / "intervals.log"
    log.touch()
    interval = NewJob(type="chaos.interval", lane="fast", input={"log": str(log), "work_s": 0.02})
    interval_ids = [e.job.id for e in await store.jobs.enqueue([interval] * INTERVAL_JOBS, actor="test")]
    asks = [
        NewJob(type="demo.ask", lane="fast", input={"question": f"Ship {n}?"}, owner=OWNER, channel=CHANNEL)
        for n in range(WAITING_JOBS)
    ]
    ask_ids = [e.job.id for e in await store.jobs.enqueue(asks, actor="test")]
    stuck = [NewJob(type="demo.triage", lane="fast", input={}, owner=OWNER) for _ in range(WAITING_JOBS)]
    stuck_ids = [e.job.id for e in await store.jobs.enqueue(stuck, actor="test")]

    async def settled() -> bool:
        states = (await store.jobs.stats()).states
        return (
            states["completed"] >= INTERVAL_JOBS
            and states["waiting_decision"] == WAITING_JOBS
            and all(d.message_ts for d in await store.decisions.open(limit=1000))
        )

    await wait_for(settled, timeout_s=SETTLE_TIMEOUT_S)
    runs = _runs(log)
    assert sorted(runs) == sorted(interval_ids) and all(len(r) == 1 for r in runs.values())  # each ran once
    workers = Counter(worker for r in runs.values() for worker, _, _ in r)
    assert len(workers) >= 2, workers  # the work was shared

    # Half the decisions are clicked, each on another replica; the rest time out, all at once.
    open_decisions = sorted(await store.decisions.open(limit=1000), key=lambda d: d.id)
    clicked, timed_out = open_decisions[: WAITING_JOBS // 2], open_decisions[WAITING_JOBS // 2 :]
    resumed_after: list[float] = []
    claimed_by: list[str] = []
    for n, decision in enumerate(clicked):
        async with SignedRequests(fake, event_urls[n % REPLICAS]) as slack:
            click = slack.block_actions(
                "UREVIEW001", "answer:approve", channel=CHANNEL, message_ts=decision.message_ts or ""
            )
            sent_at = clock.now()
            assert (await slack.send(click)).status == 200
        claim = await _claimed_again(store, decision.job_id)
        resumed_after.append((claim[0] - sent_at).total_seconds())
        claimed_by.append(claim[1])
    now = clock.now()
    async with store.db.write() as conn:  # test set-up: the other decisions, the SLAs and deadlines fall due
        await conn.execute(
            decisions.update().where(decisions.c.id.in_([d.id for d in timed_out])).values(timeout_at=now)
        )
        await conn.execute(jobs.update().where(jobs.c.id.in_(stuck_ids)).values(sla_at=now, sla_next_at=now))
        # half the stuck jobs expire after both levels have been told
        await conn.execute(
            jobs.update().where(jobs.c.id.in_(stuck_ids[::2])).values(deadline_at=now + timedelta(seconds=4))
        )

    async def rules_done() -> bool:
        states = (await store.jobs.stats()).states
        pending = [item for item in await store.outbox.all() if item.state == "pending"]
        trail = await _trail(store)
        climbed = sum(1 for job_id in stuck_ids if trail[job_id]["sla_escalated"] == 2)
        return (
            states["escalated"] == len(timed_out)
            and states["expired"] == len(stuck_ids[::2])
            and climbed == len(stuck_ids)
            and not pending
        )

    try:
        await wait_for(rules_done, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.1)
    except AssertionError:
        trail = await _trail(store)
        raise AssertionError(
            f"rules unfinished: states {(await store.jobs.stats()).states}, escalations "
            f"{Counter(trail[j]['sla_escalated'] for j in stuck_ids)}, pending notifications "
            f"{[(i.kind, i.target, i.error) for i in await store.outbox.all() if i.state != 'sent'][:10]}"
        ) from None
    await wait_for(lambda: _completed(store, [d.job_id for d in clicked]), timeout_s=SETTLE_TIMEOUT_S)

    trail = await _trail(store)
    for decision in timed_out:
        assert trail[decision.job_id]["decision_expired"] == 1
    for job_id in stuck_ids:
        assert trail[job_id]["sla_escalated"] == 2 and trail[job_id]["expired"] == (
            1 if job_id in stuck_ids[::2] else 0
        )
    for job_id in ask_ids:
        assert trail[job_id]["claimed"] == (2 if job_id in [d.job_id for d in clicked] else 1)
    dms = Counter(
        m["text"].split(" ", 1)[0]
        for user in (OWNER, BACKUP)
        for m in fake.messages(fake.dm_channel(user))
        if "past its SLA" in m["text"]
    )
    assert dms == Counter({f"Q-{job_id}": 2 for job_id in stuck_ids}), dms  # one DM per level: owner, backup
    updates = Counter(call.args["ts"] for call in fake.calls_to("chat.update", ok=True))
    assert updates == Counter({d.message_ts: 1 for d in open_decisions}), updates
    posts = Counter(
        m["ts"]
        for m in fake.messages(CHANNEL)
        if "needs a decision" in m["text"] or "Decision" in str(m.get("blocks"))
    )
    assert len(posts) == WAITING_JOBS
    print(
        f"\n[replicas] {REPLICAS} replicas: {INTERVAL_JOBS} jobs each run once (share per replica "
        f"{sorted(workers.values())}); {len(stuck_ids)} jobs x 2 escalation DMs, {len(timed_out)} timeouts, "
        f"{len(stuck_ids[::2])} expiries, each once; clicked decisions resumed after "
        f"{min(resumed_after):.2f}-{max(resumed_after):.2f} s, claimed on {len(set(claimed_by))} replicas"
    )
    assert max(resumed_after) <= RESUME_WITHIN_S, resumed_after


def _runs(log: Path) -> dict[int, list[tuple[str, float, float]]]:
    """Each job's runs as (worker, start, end); asserts no job's runs overlap."""
    runs: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for line in log.read_text(encoding="utf-8").splitlines():
        job_id, _, worker, start, end = line.split()
        runs[int(job_id)].append((worker, float(start), float(end)))
    for job_id, spans in runs.items():
        spans.sort(key=lambda span: span[1])
        for before, after in itertools.pairwise(spans):
            assert before[2] <= after[1], f"Q-{job_id} ran twice at once: {spans}"
    return runs


async def _claimed_again(store: Store, job_id: int) -> tuple[datetime, str]:
    """When and by whom the job was claimed for its second run (after its decision was answered)."""
    found: list[tuple[datetime, str]] = []

    async def claimed() -> bool:
        async with store.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(events.c.at, events.c.actor)
                    .where(events.c.job_id == job_id, events.c.kind == "claimed")
                    .order_by(events.c.id)
                )
            ).all()
        if len(rows) < 2:
            return False
        found.append((rows[1].at, rows[1].actor))
        return True

    await wait_for(claimed, timeout_s=10, interval_s=0.01)
    return found[0]


async def _trail(store: Store) -> dict[int, Counter[str]]:
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    async with store.db.read() as conn:
        for row in await conn.execute(sa.select(events.c.job_id, events.c.kind)):
            counts[row.job_id][row.kind] += 1
    return counts


async def _completed(store: Store, job_ids: list[int]) -> bool:
    states = [(await store.jobs.get(job_id)).state for job_id in job_ids]
    return all(state is JobState.COMPLETED for state in states)
