"""Idempotent enqueue, chains, budgets, authority, write-once markers, failure classes and cooperative
cancel, through the real worker runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Budget, Registry, job_type
from bot.outcomes import Ambiguous, FatalError, MissingInput
from bot.runtime import Worker
from bot.settings import BudgetConfig, Config
from store.errors import InvalidInput, UnknownJobType
from store.states import DecisionKind, FailureClass, JobState
from tests.conftest import fast_config
from tests.helpers import drain, wait_for, wait_for_state


class Empty(BaseModel):
    pass


class Cost(BaseModel):
    usd: float


@pytest.fixture
def config() -> Config:
    return fast_config(budgets=BudgetConfig(per_day_usd=10.0))


async def test_the_same_idempotency_key_returns_the_existing_job(engine: Engine) -> None:
    first = await engine.enqueue("demo.echo", {"text": "a"}, key="ticket-7")
    again = await engine.enqueue("demo.echo", {"text": "b"}, key="ticket-7")
    assert first.created and not again.created
    assert again.job.id == first.job.id and again.job.input == {"text": "a"}
    batch = await engine.enqueue_many(
        [
            engine.new_job("demo.echo", {"text": "c"}, key="k2"),
            engine.new_job("demo.echo", {"text": "d"}, key="k2"),
        ],
        actor="t",
    )
    assert batch[0].created and not batch[1].created and batch[0].job.id == batch[1].job.id
    assert (await engine.store.jobs.stats()).states["ready"] == 2


async def test_invalid_input_and_unknown_types_write_nothing(engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="text: Field required"):
        await engine.enqueue("demo.echo", {"txt": "a"})
    with pytest.raises(InvalidInput, match="not valid JSON"):
        await engine.enqueue("demo.echo", "{oops")
    with pytest.raises(UnknownJobType, match="unknown job type 'nope'"):
        await engine.enqueue("nope", {})
    assert sum((await engine.store.jobs.stats()).states.values()) == 0


async def test_next_chains_a_follow_up_fed_with_the_result(engine: Engine, types: Registry) -> None:
    class Draft(BaseModel):
        draft: str

    @job_type("test.draft", input=Empty, lane="fast", next=["test.qa"], into=types)
    async def draft(ctx: JobContext, data: Empty) -> dict[str, str]:
        return {"draft": "hello"}

    @job_type("test.qa", input=Draft, lane="fast", into=types)
    async def qa(ctx: JobContext, data: Draft) -> str:
        return data.draft.upper()

    parent = (await engine.enqueue("test.draft", {})).job.id
    await drain(engine)
    [child] = await engine.store.jobs.list(type="test.qa")
    assert (child.parent_id, child.state, child.result) == (parent, JobState.COMPLETED, "HELLO")


async def test_a_chained_child_whose_input_does_not_fit_waits_in_pending(
    engine: Engine, types: Registry
) -> None:
    class Needs(BaseModel):
        ticket: int

    @job_type("test.parent", input=Empty, lane="fast", next=["test.needs"], into=types)
    async def parent(ctx: JobContext, data: Empty) -> str:
        return "no ticket here"

    @job_type("test.needs", input=Needs, lane="fast", into=types)
    async def needs(ctx: JobContext, data: Needs) -> None:
        return None

    await engine.enqueue("test.parent", {}, owner="UOWNER")
    await drain(engine)
    [child] = await engine.store.jobs.list(type="test.needs")
    assert child.state is JobState.PENDING
    assert "ticket: Field required" in (child.reason or "")
    assert [n.target for n in await engine.store.outbox.all(kind="job.attention")] == ["UOWNER"]


async def test_ctx_enqueue_spawns_linked_children(engine: Engine, types: Registry) -> None:
    @job_type("test.fanout", input=Empty, lane="fast", into=types)
    async def fanout(ctx: JobContext, data: Empty) -> list[str]:
        children = [await ctx.enqueue("demo.echo", {"text": str(n)}, key=f"child-{n}") for n in range(3)]
        return [child.ref for child in children]

    parent = (await engine.enqueue("test.fanout", {})).job.id
    await drain(engine)
    children = await engine.store.jobs.list(type="demo.echo")
    assert {c.parent_id for c in children} == {parent} and len(children) == 3
    assert all(c.state is JobState.COMPLETED for c in children)


async def test_budget_per_run_escalates_with_a_raise_decision(engine: Engine, types: Registry) -> None:
    @job_type("test.spender", input=Cost, lane="fast", budget=Budget(per_job_usd=1.0), into=types)
    async def spender(ctx: JobContext, data: Cost) -> float:
        await ctx.spend(data.usd)
        return ctx.run_spend_usd

    job_id = (await engine.enqueue("test.spender", {"usd": 1.5})).job.id
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.failure_class, job.spend_usd) == (
        JobState.ESCALATED,
        FailureClass.BUDGET_EXCEEDED,
        1.5,
    )
    assert "over the $1.00 budget" in (job.reason or "")
    [decision] = await engine.store.decisions.for_job(job_id)
    assert decision.kind is DecisionKind.BUDGET and decision.option_values == ["raise", "stop"]
    answered = await engine.answer(decision.id, "raise", actor="cli")
    assert answered.job.state is JobState.READY and answered.job.budget_usd == 3.0
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.spend_usd) == (JobState.COMPLETED, 3.0)


async def test_budget_stop_cancels_and_the_daily_cap_counts_all_jobs(engine: Engine, types: Registry) -> None:
    @job_type("test.daily", input=Cost, lane="fast", into=types)
    async def daily(ctx: JobContext, data: Cost) -> str:
        await ctx.spend(data.usd)
        return "spent"

    first = (await engine.enqueue("test.daily", {"usd": 6.0})).job.id
    await drain(engine)
    second = (await engine.enqueue("test.daily", {"usd": 6.0})).job.id
    await drain(engine)
    assert (await engine.store.jobs.get(first)).state is JobState.COMPLETED
    job = await engine.store.jobs.get(second)
    assert job.state is JobState.ESCALATED and "all jobs today" in (job.reason or "")
    [decision] = await engine.store.decisions.for_job(second)
    assert (await engine.answer(decision.id, "stop", actor="cli")).job.state is JobState.CANCELLED
    assert (await engine.store.controls.spend_today())["*"] == 12.0


async def test_failure_classes_map_to_their_states(engine: Engine, types: Registry) -> None:
    class Which(BaseModel):
        kind: str

    @job_type("test.fails", input=Which, lane="fast", may={"read"}, into=types, fatal_exceptions=(KeyError,))
    async def fails(ctx: JobContext, data: Which) -> None:
        if data.kind == "missing":
            raise MissingInput("the ticket id")
        if data.kind == "policy":
            ctx.require("send_email")
        if data.kind == "ambiguous":
            raise Ambiguous("two customers match")
        if data.kind == "fatal":
            raise FatalError("malformed upstream data")
        if data.kind == "fatal_exception":
            raise KeyError("x")

    expected = {
        "missing": (JobState.PENDING, "the ticket id"),
        "policy": (JobState.BLOCKED, "test.fails may not send_email (it may: read)"),
        "ambiguous": (JobState.ESCALATED, "two customers match"),
        "fatal": (JobState.DEAD, "malformed upstream data"),
        "fatal_exception": (JobState.DEAD, "KeyError: 'x'"),
    }
    ids = {kind: (await engine.enqueue("test.fails", {"kind": kind}, owner="UO")).job.id for kind in expected}
    await drain(engine)
    for kind, (state, reason) in expected.items():
        job = await engine.store.jobs.get(ids[kind])
        assert (job.state, job.reason, job.attempts) == (state, reason, 0), kind
    attention = {n.payload["job_id"] for n in await engine.store.outbox.all(kind="job.attention")}
    assert attention == set(ids.values())


async def test_once_runs_an_irreversible_action_once_across_replays(engine: Engine, types: Registry) -> None:
    side_effects: list[str] = []

    @job_type("test.once", input=Empty, lane="fast", into=types)
    async def once(ctx: JobContext, data: Empty) -> Any:
        sent = await ctx.once("send", lambda: side_effects.append("sent") or "message-1")
        answer = await ctx.ask("confirm", "Done?", ["yes"])
        return [sent, answer.value]

    job_id = (await engine.enqueue("test.once", {})).job.id
    await drain(engine)
    [decision] = await engine.store.decisions.for_job(job_id)
    await engine.answer(decision.id, "yes", actor="cli")
    await drain(engine)
    assert (await engine.store.jobs.get(job_id)).result == ["message-1", "yes"]
    assert side_effects == ["sent"]


async def test_cancel_and_pause_stop_a_running_job_at_its_next_heartbeat(engine: Engine) -> None:
    stop = asyncio.Event()
    worker = Worker(engine)
    running = asyncio.create_task(worker.run(stop=stop))
    try:
        cancelled = (await engine.enqueue("demo.sleep", {"seconds": 60})).job.id
        paused = (await engine.enqueue("demo.sleep", {"seconds": 60})).job.id
        await wait_for_state(engine, cancelled, JobState.RUNNING)
        await wait_for_state(engine, paused, JobState.RUNNING)
        await engine.cancel(cancelled, actor="cli")
        await engine.pause(f"Q-{paused}", actor="cli")

        async def runs_stopped() -> bool:
            return not worker.runs

        await wait_for(runs_stopped, timeout_s=5)
    finally:
        stop.set()
        await running
    assert (await engine.store.jobs.get(cancelled)).state is JobState.CANCELLED
    assert (await engine.store.jobs.get(paused)).state is JobState.PAUSED
    await engine.resume(f"Q-{paused}", actor="cli")
    assert (await engine.store.jobs.get(paused)).state is JobState.READY


async def test_a_worker_shutting_down_hands_its_jobs_back_without_spending_attempts(engine: Engine) -> None:
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(engine).run(stop=stop))
    job_id = (await engine.enqueue("demo.sleep", {"seconds": 60})).job.id
    await wait_for_state(engine, job_id, JobState.RUNNING)
    stop.set()
    await running
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.attempts) == (JobState.READY, 0)
    assert [e.kind for e in await engine.store.jobs.events(job_id)][-1] == "released"


async def test_a_large_batch_mixing_keys_duplicates_and_plain_jobs_keeps_its_order(engine: Engine) -> None:
    requests = []
    for n in range(1200):
        key = f"k{n % 700}" if n % 3 else None  # keyed every third miss; keys repeat past 700
        requests.append(engine.new_job("demo.echo", {"text": str(n)}, key=key))
    results = await engine.enqueue_many(requests, actor="t")
    assert [r.job.input["text"] == str(n) for n, r in enumerate(results) if r.created] == [True] * sum(
        r.created for r in results
    )
    by_key: dict[str, int] = {}
    for request, result in zip(requests, results, strict=True):
        if request.idempotency_key:
            assert by_key.setdefault(request.idempotency_key, result.job.id) == result.job.id
    again = await engine.enqueue_many(requests, actor="t")
    assert all(not r.created for r, q in zip(again, requests, strict=True) if q.idempotency_key)
    stats = await engine.store.jobs.stats()
    assert stats.states["ready"] == len(by_key) + 2 * sum(1 for q in requests if not q.idempotency_key)


async def test_an_outcome_the_database_refuses_kills_only_that_job(engine: Engine, types: Registry) -> None:
    @job_type("test.nul", input=Empty, lane="fast", into=types)
    async def nul(ctx: JobContext, data: Empty) -> str:
        return "a\x00b"  # PostgreSQL's jsonb cannot hold a NUL character; SQLite stores it

    bad = (await engine.enqueue("test.nul", {})).job.id
    good = [(await engine.enqueue("demo.echo", {"text": str(n)})).job.id for n in range(5)]
    await drain(engine)
    for job_id in good:
        assert (await engine.store.jobs.get(job_id)).state is JobState.COMPLETED
    job = await engine.store.jobs.get(bad)
    if engine.store.db.is_postgres:
        assert job.state is JobState.DEAD and "could not be stored" in (job.reason or "")
    else:
        assert (job.state, job.result) == (JobState.COMPLETED, "a\x00b")
