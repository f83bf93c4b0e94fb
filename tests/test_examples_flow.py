"""The example job types go through their states on both databases."""

from __future__ import annotations

from bot.engine import Engine
from store.states import AnswerSource, JobState
from tests.helpers import drain


async def test_echo_completes_with_its_text_as_result(engine: Engine) -> None:
    enqueued = await engine.enqueue("demo.echo", {"text": "hello"})
    await drain(engine)
    job = await engine.store.jobs.get(enqueued.job.id)
    assert job.state is JobState.COMPLETED
    assert job.result == "hello"
    kinds = [event.kind for event in await engine.store.jobs.events(job.id)]
    assert kinds == ["enqueued", "claimed", "evidence", "completed"]


async def test_ask_waits_then_resumes_with_the_answer(engine: Engine) -> None:
    job_id = (await engine.enqueue("demo.ask", {"question": "ship it?"})).job.id
    await drain(engine)
    view = await engine.show(job_id)
    assert view.job.state is JobState.WAITING_DECISION
    [decision] = view.decisions
    assert decision.option_values == ["approve", "deny"]
    answered = await engine.answer(decision.ref, "deny", actor="U42")
    assert answered.job.state is JobState.READY
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.result == "deny"
    decision = await engine.store.decisions.get(decision.id)
    assert decision.answered_by == "U42" and decision.answer_source is AnswerSource.HUMAN


async def test_flaky_retries_then_completes(engine: Engine) -> None:
    job_id = (await engine.enqueue("demo.flaky", {"fail_times": 2})).job.id
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.attempts == 2
    assert job.result == {"attempts": 3}
    kinds = [event.kind for event in await engine.store.jobs.events(job_id)]
    assert kinds.count("transient") == 2 and kinds.count("retry_due") == 2


async def test_review_approved_completes_with_the_proposal(engine: Engine) -> None:
    job_id = (await engine.enqueue("demo.review", {"text": "draft"})).job.id
    await drain(engine)
    view = await engine.show(job_id)
    assert view.job.state is JobState.NEEDS_REVIEW
    await engine.answer(view.decisions[0].ref, "approve", actor="U1")
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED and job.result == "draft"


async def test_review_changes_run_again_with_feedback_then_reject(engine: Engine) -> None:
    job_id = (await engine.enqueue("demo.review", {"text": "draft"})).job.id
    await drain(engine)
    first = (await engine.show(job_id)).decisions[0]
    await engine.answer(first.ref, "changes", actor="U1", comment="be brief")
    await drain(engine)
    view = await engine.show(job_id)
    assert view.job.state is JobState.NEEDS_REVIEW
    assert view.job.result == "draft\n[revised for: be brief]"
    second = view.decisions[-1]
    assert second.id != first.id
    await engine.answer(second.ref, "reject", actor="U1", comment="off tone")
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.REJECTED and job.reason == "off tone"


async def test_sleep_heartbeats_while_it_runs(engine: Engine) -> None:
    job_id = (await engine.enqueue("demo.sleep", {"seconds": 0.4})).job.id
    claimed_at = None
    await drain(engine)
    job = await engine.store.jobs.get(job_id)
    claimed_at = job.started_at
    assert job.state is JobState.COMPLETED
    assert job.heartbeat_at is not None and claimed_at is not None and job.heartbeat_at > claimed_at


async def test_triage_shows_pending_blocked_escalated_and_completed(engine: Engine) -> None:
    cases = {
        "pending": ({}, JobState.PENDING),
        "blocked": ({"ticket": "T-1", "action": "send"}, JobState.BLOCKED),
        "escalated": ({"ticket": "?"}, JobState.ESCALATED),
        "completed": ({"ticket": "T-2"}, JobState.COMPLETED),
    }
    ids = {name: (await engine.enqueue("demo.triage", data)).job.id for name, (data, _) in cases.items()}
    await drain(engine)
    for name, (_, state) in cases.items():
        job = await engine.store.jobs.get(ids[name])
        assert job.state is state, name
        assert job.deadline_at is not None and job.sla_at is not None
