"""Button clicks and the modals they open: decision options, Other…, Reject's reason, Request changes'
feedback, Evidence, Acknowledge, and Retry / Cancel in escalation DMs. Thin: ack at once, call the engine,
tell the clicker."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.engine import Engine
from store.errors import QueuebotError
from store.models import Job
from store.states import DecisionKind

log = logging.getLogger("queuebot.handlers")

ANSWER_ACTION = re.compile("^" + re.escape(blocks.ANSWER_ACTION_PREFIX))
NOT_OURS = "That button is not one of queuebot's; nothing was changed."

AfterChange = Callable[[], None] | None


async def _tell(respond: AsyncRespond, text: str) -> None:
    """An ephemeral reply to the person who clicked; the original message stays as it is."""
    await respond(text=text, response_type="ephemeral", replace_original=False)


def register(app: AsyncApp, engine: Engine, *, after_change: AfterChange = None) -> None:
    """Attach the button and modal listeners. `after_change` runs after a change so the outbox goes soon."""
    _register_answers(app, engine, after_change)
    _register_comments(app, engine, after_change)
    _register_evidence(app, engine)
    _register_job_buttons(app, engine, after_change)


def _register_answers(app: AsyncApp, engine: Engine, after_change: AfterChange) -> None:
    @app.action(ANSWER_ACTION)
    async def answer_clicked(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        # Other clicks still waiting for their ack go first; this one's own request counts as one.
        await engine.wakeup.foreground.wait_quiet(besides=1)
        user = str(body["user"]["id"])
        try:
            decision_id, value = blocks.parse_clicked_answer(
                str(action.get("value", "")), action.get("block_id")
            )
            decision = await engine.store.decisions.get(decision_id)
            if decision.kind is DecisionKind.REVIEW and value in blocks.COMMENT_PROMPTS:
                # Reject asks for a reason and Request changes for feedback before anything is recorded;
                # someone who may not answer is told so now rather than after writing it.
                await engine.answerable(decision_id, actor=user)
                await client.views_open(
                    trigger_id=body["trigger_id"], view=blocks.comment_modal(decision, value)
                )
                return
            answered = await engine.answer(decision_id, value, actor=user)
        except ValueError:
            await _tell(respond, NOT_OURS)
            return
        except QueuebotError as refused:
            if await _already_theirs(engine, decision_id, value, user):
                log.info("event=click_repeated decision=D-%s user=%s", decision_id, user)
            else:
                await _tell(respond, str(refused))
            return
        if after_change is not None:
            after_change()
        if answered.decision.state.value == "open":
            await _tell(respond, f"Vote recorded: {answered.counted_votes} of {answered.decision.quorum}.")
        log.info("event=decision_clicked decision=%s user=%s", answered.decision.ref, user)


async def _already_theirs(engine: Engine, decision_id: int, value: str, user: str) -> bool:
    """A repeat of the click that answered (a double click, a redelivery): nothing to tell them."""
    try:
        decision = await engine.store.decisions.get(decision_id)
    except QueuebotError:  # no such decision: the refusal says so
        return False
    return decision.answered_by == user and decision.answer == value


def _register_comments(app: AsyncApp, engine: Engine, after_change: AfterChange) -> None:
    @app.action(blocks.OTHER_ACTION)
    async def other_clicked(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        try:
            decision_id = int(str(action.get("value", "")).removeprefix("D-"))
            if action.get("block_id") != blocks.decision_block_id(decision_id):
                raise ValueError("the button names another decision than its block")
            decision = await engine.store.decisions.get(decision_id)
        except (ValueError, QueuebotError):
            await _tell(respond, NOT_OURS)
            return
        await client.views_open(
            trigger_id=body["trigger_id"], view=blocks.comment_modal(decision, blocks.OTHER_ACTION)
        )

    @app.view(blocks.COMMENT_CALLBACK)
    async def comment_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view.get("state", {}).get("values", {})
        text = str(
            values.get(blocks.COMMENT_BLOCK, {}).get(blocks.COMMENT_INPUT, {}).get("value") or ""
        ).strip()
        if not text:
            await ack(response_action="errors", errors={blocks.COMMENT_BLOCK: "Please write something."})
            return
        try:
            decision_id, option = blocks.parse_answer_value(str(view.get("private_metadata", "")))
            value, comment = (text, None) if option == blocks.OTHER_ACTION else (option, text)
            await engine.answer(decision_id, value, actor=str(body["user"]["id"]), comment=comment)
        except (ValueError, QueuebotError) as refused:
            await ack(response_action="errors", errors={blocks.COMMENT_BLOCK: str(refused)[:150]})
            return
        await ack()
        if after_change is not None:
            after_change()


def _register_evidence(app: AsyncApp, engine: Engine) -> None:
    @app.action(blocks.EVIDENCE_ACTION)
    async def evidence_clicked(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
    ) -> None:
        await ack()
        try:
            view = await engine.show(str(action.get("value", "")))
        except QueuebotError as refused:
            await _tell(respond, str(refused))
            return
        await client.views_open(
            trigger_id=body["trigger_id"], view=blocks.evidence_modal(view.job, view.events)
        )


JobAct = Callable[[str, str], Awaitable[Job]]


def _register_job_button(
    app: AsyncApp, action_id: str, act: JobAct, told: Callable[[Job], str], after_change: AfterChange
) -> None:
    """A button whose value names a job: `act(job_ref, user)` under the engine's authority, then tell."""

    @app.action(action_id)
    async def job_button_clicked(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        try:
            job = await act(str(action.get("value", "")), str(body["user"]["id"]))
        except QueuebotError as refused:
            await _tell(respond, str(refused))
            return
        if after_change is not None:
            after_change()
        await _tell(respond, told(job))


def _register_job_buttons(app: AsyncApp, engine: Engine, after_change: AfterChange) -> None:
    """Acknowledge, Retry and Cancel in escalation DMs."""

    async def acknowledge(ref: str, user: str) -> Job:
        return await engine.acknowledge(ref, actor=user)

    async def retry(ref: str, user: str) -> Job:
        return await engine.retry(ref, actor=user)

    async def cancel(ref: str, user: str) -> Job:
        return await engine.cancel(ref, actor=user, reason=f"cancelled by {user}")

    _register_job_button(
        app,
        blocks.ACKNOWLEDGE_ACTION,
        acknowledge,
        lambda job: f"Acknowledged {job.ref}: its escalations stop here.",
        after_change,
    )
    _register_job_button(
        app,
        blocks.RETRY_ACTION,
        retry,
        lambda job: f"{job.ref} is queued again with fresh attempts.",
        after_change,
    )
    _register_job_button(
        app, blocks.CANCEL_ACTION, cancel, lambda job: f"{job.ref} is cancelled.", after_change
    )
