"""Button clicks: decision options and Acknowledge. Thin: ack at once, call the engine, tell the clicker."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.engine import Engine
from store.errors import QueuebotError

log = logging.getLogger("queuebot.handlers")

ANSWER_ACTION = re.compile("^" + re.escape(blocks.ANSWER_ACTION_PREFIX))


async def _tell(respond: AsyncRespond, text: str) -> None:
    """An ephemeral reply to the person who clicked; the original message stays as it is."""
    await respond(text=text, response_type="ephemeral", replace_original=False)


def register(app: AsyncApp, engine: Engine, *, after_change: Any = None) -> None:
    """Attach the button listeners. `after_change` is called after a change so the outbox is sent soon."""

    @app.action(ANSWER_ACTION)
    async def answer_clicked(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        user = str(body["user"]["id"])
        try:
            decision_id, value = blocks.parse_answer_value(str(action.get("value", "")))
            answered = await engine.answer(decision_id, value, actor=user)
        except ValueError:
            await _tell(respond, "That button is not one of queuebot's; nothing was changed.")
            return
        except QueuebotError as refused:
            await _tell(respond, str(refused))
            return
        if after_change is not None:
            after_change()
        if answered.decision.state.value == "open":
            await _tell(respond, f"Vote recorded: {answered.counted_votes} of {answered.decision.quorum}.")
        log.info("event=decision_clicked decision=%s user=%s", answered.decision.ref, user)

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

    @app.action(blocks.ACKNOWLEDGE_ACTION)
    async def acknowledge_clicked(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        user = str(body["user"]["id"])
        try:
            job = await engine.acknowledge(str(action.get("value", "")), actor=user)
        except QueuebotError as refused:
            await _tell(respond, str(refused))
            return
        await _tell(respond, f"Acknowledged {job.ref}: its escalations stop here.")
