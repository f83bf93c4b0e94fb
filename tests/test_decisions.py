"""Decisions: the first permitted answer wins, timeouts take the default or escalate, policies and
quorums are enforced, auto-answer rules are recorded as such, and late answers change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from bot.context import JobContext
from bot.engine import Engine
from bot.jobtypes import Registry, job_type
from bot.settings import AutoAnswerRule, Config
from store import Store
from store.errors import DecisionClosed, InvalidAnswer, NotPermitted
from store.models import AnswererPolicy
from store.states import AnswerSource, DecisionState, JobState
from tests.conftest import fast_config
from tests.helpers import drain


class Empty(BaseModel):
    pass


@pytest.fixture
def config() -> Config:
    return fast_config(
        admins=["UADMIN"],
        groups={"leads": ["ULEAD"]},
        auto_answer=[AutoAnswerRule(name="safe", type="test.*", key="retry-*", answer="yes")],
    )


@pytest.fixture
def asking(types: Registry) -> list[Any]:
    """A type that asks with the policy, default and risk a test puts in its input."""
    answers: list[Any] = []

    class AskInput(BaseModel):
        key: str = "choice"
        default: str | None = None
        risk: str | None = None
        users: list[str] = []
        groups: list[str] = []
        quorum: int = 1
        owner: bool = True

    @job_type("test.ask", input=AskInput, lane="fast", into=types)
    async def ask(ctx: JobContext, data: AskInput) -> str:
        policy = AnswererPolicy(users=data.users, groups=data.groups, quorum=data.quorum, owner=data.owner)
        answer = await ctx.ask(
            data.key,
            "Proceed?",
            ["yes", "no"],
            default=data.default,
            timeout="1m",
            answerers=policy,
            risk=data.risk,
        )
        answers.append(answer)
        return answer.value

    return answers


async def waiting_decision(engine: Engine, **input: Any) -> tuple[int, int]:
    job_id = (await engine.enqueue("test.ask", input, owner="UOWNER")).job.id
    await drain(engine)
    [decision] = await engine.store.decisions.for_job(job_id)
    assert (await engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION
    return job_id, decision.id


async def test_many_concurrent_answers_exactly_one_wins(
    store: Store, engine: Engine, asking: list[Any]
) -> None:
    job_id, decision_id = await waiting_decision(engine, users=[f"U{n}" for n in range(20)])
    # Every click comes through its own connection pool, as from separate Slack requests on replicas.
    stores = [Store.connect(store.db.url) for _ in range(4)]
    engines = [Engine(s, engine.config, types=engine.types) for s in stores]

    async def click(n: int) -> str:
        try:
            await engines[n % 4].answer(decision_id, "yes" if n % 2 else "no", actor=f"U{n}")
            return "won"
        except DecisionClosed as closed:
            assert closed.answered_by is not None and closed.answer in ("yes", "no")
            return "told"

    try:
        outcomes = await asyncio.gather(*(click(n) for n in range(20)))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert outcomes.count("won") == 1
    decision = await store.decisions.get(decision_id)
    events = await store.jobs.events(job_id)
    assert [e.kind for e in events].count("decision_answered") == 1
    assert [e.kind for e in events].count("resumed") == 1
    await drain(engine)
    assert (await store.jobs.get(job_id)).result == decision.answer


async def test_an_answer_after_the_decision_closed_changes_nothing(engine: Engine, asking: list[Any]) -> None:
    job_id, decision_id = await waiting_decision(engine)
    await engine.answer(decision_id, "yes", actor="UOWNER")
    trail = await engine.store.jobs.events(job_id)
    with pytest.raises(DecisionClosed, match=r"already answered by UOWNER with yes"):
        await engine.answer(decision_id, "no", actor="UADMIN")
    assert await engine.store.jobs.events(job_id) == trail
    assert (await engine.store.decisions.get(decision_id)).answer == "yes"


async def test_a_value_that_is_not_an_option_is_refused(engine: Engine, asking: list[Any]) -> None:
    _, decision_id = await waiting_decision(engine)
    with pytest.raises(InvalidAnswer, match="choose one of: yes, no"):
        await engine.answer(decision_id, "maybe", actor="UOWNER")
    assert (await engine.store.decisions.get(decision_id)).state is DecisionState.OPEN


async def test_policy_allows_listed_users_groups_owner_and_admins_and_audits_refusals(
    engine: Engine, asking: list[Any]
) -> None:
    job_id, decision_id = await waiting_decision(engine, users=["UUSER"], groups=["leads"], owner=False)
    with pytest.raises(NotPermitted, match="UOWNER may not answer D-1; it is for UUSER, group leads, admins"):
        await engine.answer(decision_id, "yes", actor="UOWNER")
    denied = [e for e in await engine.store.jobs.events(job_id) if e.kind == "denied"]
    assert [(e.actor, e.reason) for e in denied] == [("UOWNER", "not permitted to answer D-1")]
    await engine.answer(decision_id, "yes", actor="ULEAD")  # a group member
    for actor in ("UUSER", "UADMIN", "UOWNER"):
        job_id, decision_id = await waiting_decision(engine, key=f"k-{actor}", users=["UUSER"])
        answered = await engine.answer(decision_id, "no", actor=actor)
        assert answered.decision.answered_by == actor


async def test_a_quorum_needs_enough_matching_votes(engine: Engine, asking: list[Any]) -> None:
    _, decision_id = await waiting_decision(engine, users=["U1", "U2", "U3"], quorum=2)
    first = await engine.answer(decision_id, "yes", actor="U1")
    assert first.decision.state is DecisionState.OPEN and first.counted_votes == 1
    other = await engine.answer(decision_id, "no", actor="U2")
    assert other.decision.state is DecisionState.OPEN
    again = await engine.answer(decision_id, "yes", actor="U1")  # the same person twice is one vote
    assert again.counted_votes == 1
    final = await engine.answer(decision_id, "yes", actor="U3")
    assert (final.decision.state, final.decision.answer) == (DecisionState.ANSWERED, "yes")
    assert final.job.state is JobState.READY


async def test_a_timeout_with_a_default_records_the_default_and_resumes(
    engine: Engine, asking: list[Any], frozen_clock: Any
) -> None:
    _, decision_id = await waiting_decision(engine, default="no")
    frozen_clock.tick(59)
    assert await engine.store.decisions.expire_due() == []
    frozen_clock.tick(2)
    [outcome] = await engine.store.decisions.expire_due()
    assert outcome.decision.answer_source is AnswerSource.TIMEOUT_DEFAULT
    assert outcome.decision.answered_by == "timeout"
    assert outcome.job.state is JobState.READY
    await drain(engine)
    assert asking[-1].value == "no" and asking[-1].is_default
    with pytest.raises(DecisionClosed):
        await engine.answer(decision_id, "yes", actor="UOWNER")


async def test_a_timeout_without_a_default_escalates_the_job(
    engine: Engine, asking: list[Any], frozen_clock: Any
) -> None:
    job_id, decision_id = await waiting_decision(engine)
    frozen_clock.tick(61)
    [outcome] = await engine.store.decisions.expire_due()
    assert outcome.decision.state is DecisionState.EXPIRED
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.ESCALATED
    assert job.reason == "D-1 timed out with no default"
    with pytest.raises(DecisionClosed, match="D-1 is expired"):
        await engine.answer(decision_id, "yes", actor="UOWNER")
    # A person re-queues it: the question is asked again as a new round.
    await engine.retry(job_id, actor="cli")
    await drain(engine)
    decisions = await engine.store.decisions.for_job(job_id)
    assert [d.key for d in decisions] == ["choice", "choice#2"]
    assert decisions[-1].state is DecisionState.OPEN


async def test_an_auto_answer_rule_answers_low_risk_decisions_without_waiting(
    engine: Engine, asking: list[Any]
) -> None:
    job_id = (await engine.enqueue("test.ask", {"key": "retry-1", "risk": "low"})).job.id
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert (job.state, job.result) == (JobState.COMPLETED, "yes")
    [decision] = await engine.store.decisions.for_job(job_id)
    assert (decision.answer_source, decision.answered_by) == (AnswerSource.AUTO_RULE, "rule:safe")
    # High risk, or a key the rule does not name, still waits for a person.
    for data in ({"key": "retry-2", "risk": "high"}, {"key": "other", "risk": "low"}):
        other = (await engine.enqueue("test.ask", data)).job.id
        await drain(engine)
        assert (await engine.store.jobs.get(other)).state is JobState.WAITING_DECISION


async def test_cancelling_a_waiting_job_closes_its_decision(engine: Engine, asking: list[Any]) -> None:
    job_id, decision_id = await waiting_decision(engine)
    await engine.cancel(job_id, actor="cli")
    assert (await engine.store.decisions.get(decision_id)).state is DecisionState.CANCELLED
    with pytest.raises(DecisionClosed, match="is cancelled"):
        await engine.answer(decision_id, "yes", actor="UOWNER")
    notes = await engine.store.outbox.all(kind="decision.closed")
    assert [n.decision_id for n in notes] == [decision_id]


async def test_opening_a_decision_queues_its_message_once(engine: Engine, asking: list[Any]) -> None:
    await waiting_decision(engine)
    [note] = await engine.store.outbox.all(kind="decision.opened")
    assert note.payload["decision_id"] == 1 and note.dedup_key == "decision:1:opened"
