"""Block Kit messages: within Slack's limits however long the agent's output, with button values that
name the decision and the option."""

from __future__ import annotations

import json

import pytest

from bot import blocks
from bot.engine import Engine
from store.models import Decision, Job
from tests.helpers import drain


async def opened(engine: Engine, job_type: str, data: dict[str, object]) -> tuple[Decision, Job]:
    job_id = (await engine.enqueue(job_type, data, owner="UOWNER")).job.id
    await drain(engine)
    [decision] = await engine.store.decisions.for_job(job_id)
    return decision, await engine.store.jobs.get(job_id)


async def test_a_decision_has_one_button_per_option_whose_value_names_it(engine: Engine) -> None:
    decision, job = await opened(engine, "demo.ask", {"question": "Ship it?"})
    text, built = blocks.decision_message(decision, job)
    rendered = blocks.to_dicts(built)
    assert "Q-1 needs a decision: Ship it?" == text
    [actions] = [b for b in rendered if b["type"] == "actions"]
    values = [blocks.parse_answer_value(e["value"]) for e in actions["elements"]]
    assert values == [(decision.id, "approve"), (decision.id, "deny")]
    assert {e["action_id"] for e in actions["elements"]} == {"answer:approve", "answer:deny"}


async def test_a_long_proposal_is_cut_to_fit_and_points_at_the_evidence(engine: Engine) -> None:
    decision, job = await opened(engine, "demo.review", {"text": "x" * 20_000})
    _, built = blocks.decision_message(decision, job)
    rendered = blocks.to_dicts(built)
    assert len(rendered) <= blocks.MAX_BLOCKS_PER_MESSAGE
    sections = [b["text"]["text"] for b in rendered if b["type"] == "section"]
    assert all(len(text) <= blocks.SECTION_TEXT_LIMIT for text in sections)
    assert any("cut: see Evidence" in text for text in sections)
    [actions] = [b for b in rendered if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]][-1] == blocks.EVIDENCE_ACTION
    assert job.result == "x" * 20_000  # the trail keeps it whole


async def test_a_closed_decision_shows_who_answered_and_has_no_buttons(engine: Engine) -> None:
    decision, _ = await opened(engine, "demo.ask", {"question": "Ship it?"})
    answered = await engine.answer(decision.id, "approve", actor="U42")
    text, built = blocks.closed_decision_message(answered.decision, answered.job)
    rendered = json.dumps(blocks.to_dicts(built))
    assert "<@U42> answered *approve*" in rendered and "actions" not in rendered
    assert text.startswith("D-1: <@U42> answered *approve*")


async def test_an_escalation_dm_offers_acknowledge_and_the_open_decision(engine: Engine) -> None:
    decision, job = await opened(engine, "demo.ask", {"question": "Ship it?"})
    text, built = blocks.escalation_message(job, level=2, overdue_s=900, decision=decision)
    rendered = blocks.to_dicts(built)
    action_ids = [e["action_id"] for b in rendered if b["type"] == "actions" for e in b["elements"]]
    assert action_ids == ["answer:approve", "answer:deny", blocks.ACKNOWLEDGE_ACTION]
    assert "15 min past its SLA" in text


def test_button_values_that_are_not_ours_are_refused() -> None:
    for value in ("", "D-x:yes", "Q-1:yes", "D-1:", "D-1"):
        with pytest.raises(ValueError, match="not a decision button value"):
            blocks.parse_answer_value(value)
    assert blocks.parse_answer_value("D-12:a:b") == (12, "a:b")


def test_more_than_fifty_blocks_are_refused() -> None:
    from slack_sdk.models.blocks import DividerBlock

    with pytest.raises(ValueError, match="at most 50"):
        blocks.to_dicts([DividerBlock() for _ in range(51)])
