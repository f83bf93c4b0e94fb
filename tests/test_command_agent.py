"""The built-in `command` job type runs real agent programs (tests/agents/*.py) speaking JSON lines, in
durable and held mode, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine
from bot.runtime import Worker
from store import clock
from store.models import Decision, Job
from store.states import AnswerSource, DecisionKind, DecisionState, FailureClass, JobState
from tests.conftest import fast_config
from tests.helpers import SETTLE_TIMEOUT_S, drain, wait_for, wait_for_state

AGENTS = Path(__file__).parent / "agents"


def agent(name: str, *args: object) -> list[str]:
    return [sys.executable, str(AGENTS / name), *(str(arg) for arg in args)]


async def enqueue(engine: Engine, argv: list[str], *, mode: str = "durable", **extra: Any) -> int:
    return (await engine.enqueue("command", {"argv": argv, "mode": mode, **extra})).job.id


async def kinds(engine: Engine, job_id: int) -> list[str]:
    return [event.kind for event in await engine.store.jobs.events(job_id)]


def runs_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@contextlib.asynccontextmanager
async def worker_running(engine: Engine) -> AsyncIterator[Worker]:
    """A worker (no time rules) running in the background until the block ends."""
    worker = Worker(engine)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop=stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, SETTLE_TIMEOUT_S)


async def open_decision(engine: Engine, job_id: int) -> Decision:
    """Wait until the job has an open decision and return it."""
    found: list[Decision] = []

    async def opened() -> bool:
        found[:] = [d for d in await engine.store.decisions.for_job(job_id) if d.state is DecisionState.OPEN]
        return bool(found)

    await wait_for(opened)
    return found[-1]


async def run_until(engine: Engine, job_id: int, state: JobState) -> Job:
    """Run a worker until the job reaches `state` (for failures, whose retries `drain` would run too)."""
    async with worker_running(engine):
        return await wait_for_state(engine, job_id, state)


def reconfigured(engine: Engine, **overrides: object) -> Engine:
    return Engine(engine.store, fast_config(**overrides), types=engine.types, wakeup=engine.wakeup)


# ---- reporting and completing --------------------------------------------------------------------------


async def test_progress_evidence_and_cost_are_recorded_and_the_result_completes_the_job(
    engine: Engine, tmp_path: Path
) -> None:
    job_id = await enqueue(
        engine, agent("reporter.py", "--usd", 0.25), cwd=str(tmp_path), env={"GREETING": "hi"}
    )
    await drain(engine)

    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.result == {
        "fixed": 3,
        "job": job.ref,
        "attempt": "1",
        "mode": "durable",
        "greeting": "hi",
        "cwd": str(tmp_path),
    }
    assert job.spend_usd == pytest.approx(0.25)
    events = await engine.store.jobs.events(job_id)
    by_kind = {kind: [e for e in events if e.kind == kind] for kind in ("progress", "evidence", "spend")}
    assert [e.reason for e in by_kind["progress"]] == [
        "reading the repository",
        "plain text is not a protocol message",
    ]
    found, unknown = by_kind["evidence"]
    assert found.reason == "found 3 failing tests"
    assert found.details == {"tests": ["a", "b", "c"], "summary": "3 of 120"}  # "summary" is just a detail
    assert unknown.reason == "agent said something queuebot does not know"
    assert unknown.details == {"message": {"type": "mood", "feeling": "unknown to queuebot"}}
    assert [e.details for e in by_kind["spend"]] == [{"usd": 0.25}]
    assert [e.kind for e in events][-1] == "completed"
    assert (await engine.store.controls.spend_today())["command"] == pytest.approx(0.25)


async def test_result_with_review_waits_for_approval_then_completes_with_the_proposal(engine: Engine) -> None:
    job_id = await enqueue(engine, agent("reviewer.py"))
    await drain(engine)

    view = await engine.show(job_id)
    assert view.job.state is JobState.NEEDS_REVIEW
    assert view.job.result == {"notes": "v2: faster claims"}
    assert view.job.reason == "customer-facing text"
    [review] = view.decisions
    assert review.kind is DecisionKind.REVIEW and review.question == "Publish these notes?"
    assert review.details is not None and review.details["summary"] == "release notes for v2"
    await engine.answer(review.ref, "approve", actor="U1")
    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED and job.result == {"notes": "v2: faster claims"}


# ---- durable decisions ---------------------------------------------------------------------------------


async def test_durable_decision_ends_the_run_then_reruns_the_command_with_the_answer(
    engine: Engine, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.jsonl"
    job_id = await enqueue(engine, agent("asker.py", "--runs", runs, "--options", "ship", "hold"))
    await drain(engine)

    view = await engine.show(job_id)
    assert view.job.state is JobState.WAITING_DECISION
    [decision] = view.decisions
    assert decision.key == "cmd:deploy" and decision.question == "deploy: which way?"
    assert decision.option_values == ["ship", "hold"] and decision.state is DecisionState.OPEN
    # The agent blocks on stdin after asking, yet no process waits for the answer: the run was ended.
    [first] = runs_of(runs)
    assert first["answers"] == {} and not alive(first["pid"])

    answered = await engine.answer(decision.ref, "ship", actor="U42")
    assert answered.job.state is JobState.READY
    await drain(engine)

    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.result == {"answer": "ship", "answered_by": "U42", "source": "human", "via": "env"}
    _, second = runs_of(runs)
    assert second["answers"] == {"deploy": {"answer": "ship", "answered_by": "U42", "source": "human"}}
    assert job.attempts == 0
    assert (await kinds(engine, job_id)).count("claimed") == 2


async def test_durable_agent_with_a_background_child_still_ends_its_run_and_leaves_no_process(
    engine: Engine, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.jsonl"
    job_id = await enqueue(engine, agent("asker.py", "--runs", runs, "--spawn-child"))
    await drain(engine, timeout_s=15)

    assert (await engine.store.jobs.get(job_id)).state is JobState.WAITING_DECISION
    [run] = runs_of(runs)
    assert not alive(run["pid"])
    await wait_for(lambda: _gone(run["child_pid"]), timeout_s=5)


async def _gone(pid: int) -> bool:
    return not alive(pid)


async def test_durable_answer_to_a_reasked_decision_reaches_the_agent_under_its_own_id(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.jsonl"
    job_id = await enqueue(engine, agent("asker.py", "--runs", runs, "--timeout", 60, "--after-ask", "exit"))
    await drain(engine, rules=False)
    first = await open_decision(engine, job_id)
    real_now = clock.now
    with monkeypatch.context() as patch:  # the first round times out with no default: escalated
        patch.setattr(clock, "now", lambda: real_now() + timedelta(minutes=2))
        await engine.store.decisions.expire_due()
    assert (await engine.store.jobs.get(job_id)).state is JobState.ESCALATED

    await engine.retry(job_id, actor="cli")
    await drain(engine, rules=False)
    second = await open_decision(engine, job_id)
    assert second.id != first.id and second.key == "cmd:deploy#2"
    await engine.answer(second.ref, "hold", actor="U9")
    await drain(engine, rules=False)

    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.COMPLETED
    assert job.result == {"answer": "hold", "answered_by": "U9", "source": "human", "via": "env"}
    last_run = runs_of(runs)[-1]
    assert last_run["answers"] == {"deploy": {"answer": "hold", "answered_by": "U9", "source": "human"}}


# ---- held decisions ------------------------------------------------------------------------------------


async def test_held_decision_keeps_the_job_running_and_answers_the_live_process_on_stdin(
    engine: Engine, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.jsonl"
    job_id = await enqueue(engine, agent("asker.py", "--runs", runs), mode="held")
    async with worker_running(engine):
        decision = await open_decision(engine, job_id)
        assert decision.key == "cmd:deploy" and decision.option_values == ["ship", "hold"]
        job = await engine.store.jobs.get(job_id)
        assert job.state is JobState.RUNNING
        [run] = runs_of(runs)
        assert alive(run["pid"])  # the agent is still there, waiting on stdin

        answered = await engine.answer(decision.ref, "ship", actor="U7")
        assert answered.job.state is JobState.RUNNING  # held: the answer does not requeue the job
        job = await wait_for_state(engine, job_id, JobState.COMPLETED)

    assert job.result == {"answer": "ship", "answered_by": "U7", "source": "human", "via": "stdin"}
    assert len(runs_of(runs)) == 1 and not alive(run["pid"])
    assert (await kinds(engine, job_id)).count("claimed") == 1


async def test_held_decision_past_its_timeout_sends_the_default_as_timeout_default(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await enqueue(engine, agent("asker.py", "--timeout", 60, "--default", "hold"), mode="held")
    async with worker_running(engine):
        decision = await open_decision(engine, job_id)
        assert decision.default == "hold"
        assert await engine.store.decisions.expire_due() == []  # not due yet
        real_now = clock.now
        with monkeypatch.context() as patch:
            patch.setattr(clock, "now", lambda: real_now() + timedelta(minutes=2))
            [expired] = await engine.store.decisions.expire_due()
        assert expired.decision.id == decision.id
        assert expired.decision.answer_source is AnswerSource.TIMEOUT_DEFAULT
        job = await wait_for_state(engine, job_id, JobState.COMPLETED)

    assert job.result == {
        "answer": "hold",
        "answered_by": "timeout",
        "source": "timeout_default",
        "via": "stdin",
    }


async def test_held_decision_that_expires_without_default_escalates_and_a_retry_asks_a_new_round(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = await enqueue(engine, agent("asker.py", "--timeout", 60), mode="held")
    async with worker_running(engine):
        first = await open_decision(engine, job_id)
        real_now = clock.now
        with monkeypatch.context() as patch:
            patch.setattr(clock, "now", lambda: real_now() + timedelta(minutes=2))
            await engine.store.decisions.expire_due()
        job = await wait_for_state(engine, job_id, JobState.ESCALATED)
        assert job.failure_class is FailureClass.AMBIGUOUS
        assert job.reason == f"{first.ref} expired with no answer"

        await engine.retry(job_id, actor="cli")
        second = await open_decision(engine, job_id)
        assert second.key == "cmd:deploy#2"
        assert (await engine.store.jobs.get(job_id)).state is JobState.RUNNING
        await engine.answer(second.ref, "ship", actor="U3")
        job = await wait_for_state(engine, job_id, JobState.COMPLETED)

    assert job.result == {"answer": "ship", "answered_by": "U3", "source": "human", "via": "stdin"}


async def test_held_decision_with_a_default_that_is_not_an_option_fails_the_run_without_opening_it(
    engine: Engine,
) -> None:
    job_id = await enqueue(engine, agent("asker.py", "--default", "maybe"), mode="held")
    job = await run_until(engine, job_id, JobState.RETRY_SCHEDULED)

    assert job.reason is not None and "default 'maybe' is not one of the options" in job.reason
    assert await engine.store.decisions.for_job(job_id) == []


# ---- rate limits, failures and budgets -----------------------------------------------------------------


async def test_rate_limit_requeues_the_job_later_without_spending_an_attempt_and_cools_the_lane(
    engine: Engine,
) -> None:
    job_id = await enqueue(engine, agent("rate_limited.py", 120))
    before = clock.now()
    await drain(engine)

    job = await engine.store.jobs.get(job_id)
    assert job.state is JobState.READY and job.attempts == 0
    assert job.failure_class is FailureClass.RATE_LIMITED
    assert timedelta(seconds=110) < job.run_after - before < timedelta(seconds=130)
    cooldowns = await engine.store.controls.cooldowns()
    assert set(cooldowns) == {"heavy"} and cooldowns["heavy"] == job.run_after
    assert (await kinds(engine, job_id)).count("claimed") == 1


async def test_nonzero_exit_schedules_a_retry_whose_reason_ends_with_the_stderr_tail(engine: Engine) -> None:
    job_id = await enqueue(engine, agent("crash.py", 3, "Traceback: KeyError 'token'"))
    job = await run_until(engine, job_id, JobState.RETRY_SCHEDULED)

    assert job.attempts == 1 and job.failure_class is FailureClass.TRANSIENT
    assert job.reason is not None
    assert job.reason.startswith(f"{sys.executable} exited with 3: ")
    assert job.reason.endswith("Traceback: KeyError 'token'")  # the last line survives the length cap
    assert "NOISE-HEAD" not in job.reason and len(job.reason) <= 2000


async def test_exit_zero_without_a_result_is_a_transient_failure_that_says_so(engine: Engine) -> None:
    job_id = await enqueue(engine, agent("crash.py", 0, "finished quietly"))
    job = await run_until(engine, job_id, JobState.RETRY_SCHEDULED)

    assert job.failure_class is FailureClass.TRANSIENT and job.attempts == 1
    assert job.reason == f"{sys.executable} exited without a result message"


async def test_a_missing_program_is_dead_at_once_saying_so(engine: Engine, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-agent"
    job_id = await enqueue(engine, [str(missing), "--flag"])
    job = await run_until(engine, job_id, JobState.DEAD)

    assert job.reason == f"cannot start {missing}: No such file or directory"


async def test_cost_over_the_per_run_budget_escalates_with_a_budget_decision(engine: Engine) -> None:
    engine = reconfigured(engine, budgets={"per_run_usd": 1.0})
    job_id = await enqueue(engine, agent("reporter.py", "--usd", 2.5))
    await drain(engine)

    view = await engine.show(job_id)
    assert view.job.state is JobState.ESCALATED
    assert view.job.failure_class is FailureClass.BUDGET_EXCEEDED
    assert view.job.reason == "spent $2.50 on this run, over the $1.00 budget"
    assert view.job.spend_usd == pytest.approx(2.5) and view.job.result is None
    [decision] = view.decisions
    assert decision.kind is DecisionKind.BUDGET and decision.option_values == ["raise", "stop"]
