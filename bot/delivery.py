"""Outbox delivery: every Web API call queuebot makes comes from an outbox row, sent with Slack's rate
limits honoured (slack_sdk's retry handlers), settled once, and in order per message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.engine import Engine
from bot.wakeup import wait_any
from store.models import OutboxItem

log = logging.getLogger("queuebot.delivery")

#: How long a delivering replica holds a row before another may try it.
LEASE_S = 60.0
#: Rows taken per round.
BATCH = 50
#: Backoff for a row whose delivery failed, doubled per attempt up to the cap.
RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
#: Slack errors that no retry will mend: the row is parked as failed at once.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "invalid_blocks",
        "msg_too_long",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "user_not_found",
        "cannot_dm_bot",
        "no_text",
    }
)
#: Most attempts before a row is parked as failed.
MAX_ATTEMPTS = 10
#: Every message queuebot posts carries its outbox row id in Slack message metadata under this type, so a
#: row whose earlier try may have reached Slack is looked for in the channel before it is posted again.
METADATA_EVENT_TYPE = "queuebot_notification"
#: How far back (before the row was written) and how many messages the look-up reads.
LOOKBACK_S = 5.0
LOOKUP_LIMIT = 200


def retry_handlers(*, may_repeat: bool = True) -> list[AsyncRetryHandler]:
    """429 with Retry-After is retried inside the client (Slack did nothing). 5xx and dropped connections
    are too when repeating a call is harmless; the outbox's sender does not retry those in the client,
    because Slack may have posted before the answer was lost: it retries the row after checking."""
    handlers: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=3)]
    if may_repeat:
        handlers += [
            AsyncServerErrorRetryHandler(max_retry_count=2),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
        ]
    return handlers


def web_client(token: str, base_url: str | None, *, may_repeat: bool = True) -> AsyncWebClient:
    """A Web API client with slack_sdk's retry handlers (see `retry_handlers`)."""
    client = AsyncWebClient(token=token, base_url=base_url or AsyncWebClient.BASE_URL)
    client.retry_handlers.extend(retry_handlers(may_repeat=may_repeat))
    return client


def _is_user(target: str) -> bool:
    return target[:1] in ("U", "W")


class Deferred(Exception):
    """The row must wait for an earlier message of the same decision to be sent."""


def delivery_client(token: str, base_url: str | None) -> AsyncWebClient:
    """The sender's client: only retries that cannot post twice happen inside it."""
    return web_client(token, base_url, may_repeat=False)


class OutboxDelivery:
    """Sends due outbox rows; run one per process (rows are leased, so replicas share the work). Give it a
    `delivery_client`, whose retries cannot post twice."""

    def __init__(self, engine: Engine, client: AsyncWebClient) -> None:
        self.engine = engine
        self.client = client
        self.store = engine.store
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event, *, poll_s: float = 0.5) -> None:
        while not stop.is_set():
            # Background work: Slack requests in flight are answered first (bot.wakeup.Foreground).
            await self.engine.wakeup.foreground.wait_quiet()
            try:
                sent = await self.deliver_due()
            except Exception as exc:  # the database or Slack may be away: try again next round
                log.warning("event=delivery_round_failed error=%s", exc)
                sent = 0
            if not sent:
                self.wake.clear()
                await wait_any(self.wake, stop, timeout_s=poll_s)

    async def deliver_due(self) -> int:
        """Deliver one batch of due rows, oldest first; returns how many were settled."""
        settled = 0
        for item in await self.store.outbox.lease_due(limit=BATCH, lease_s=LEASE_S):
            settled += await self._deliver_one(item)
        return settled

    async def _deliver_one(self, item: OutboxItem) -> int:
        try:
            response = await self._send(item)
        except Deferred:
            await self.store.outbox.retry_at_once(item.id)
            return 0
        except SlackApiError as exc:
            await self._failed(item, exc)
            return 0
        except Exception as exc:  # a timeout or connection error that outlived the client's retries
            await self.store.outbox.retry_later(
                item.id, delay_s=self._backoff_s(item), error=repr(exc)[:500], max_attempts=MAX_ATTEMPTS
            )
            return 0
        await self.store.outbox.mark_sent(item.id, response)
        log.info("event=notification_sent kind=%s job=Q-%s target=%s", item.kind, item.job_id, item.target)
        return 1

    def _backoff_s(self, item: OutboxItem) -> float:
        return float(min(RETRY_CAP_S, RETRY_BASE_S * 2**item.attempts))

    async def _failed(self, item: OutboxItem, exc: SlackApiError) -> None:
        error = str(exc.response.get("error", "unknown_error"))
        if error in PERMANENT_ERRORS:
            await self.store.outbox.retry_later(item.id, delay_s=0, error=error, max_attempts=0)
            log.warning("event=notification_failed kind=%s job=Q-%s error=%s", item.kind, item.job_id, error)
            return
        delay = self._backoff_s(item)
        if exc.response.status_code == 429:
            delay = max(delay, float(exc.response.headers.get("Retry-After", delay)))
        await self.store.outbox.retry_later(item.id, delay_s=delay, error=error, max_attempts=MAX_ATTEMPTS)

    async def _send(self, item: OutboxItem) -> dict[str, Any]:
        if item.kind == "decision.opened":
            return await self._post_decision(item)
        if item.kind == "decision.closed":
            return await self._update_decision(item)
        if item.target is None:
            return {"skipped": "no one to tell"}
        if item.job_id is None:
            return {"skipped": f"unknown notification {item.kind}"}
        job = await self.store.jobs.get(item.job_id)
        if item.kind == "sla.level":
            decision = await self.store.decisions.open_for_job(job.id)
            text, built = blocks.escalation_message(
                job, int(item.payload.get("level", 1)), float(item.payload.get("overdue_s", 0)), decision
            )
        else:
            text, built = blocks.job_note_message(job)
        return await self._post(item, item.target, text, built)

    async def _post(self, item: OutboxItem, target: str, text: str, built: list[Any]) -> dict[str, Any]:
        """Post once: a row tried before may already be in the channel (its answer lost, or the sender
        died before settling it), so it is looked for there first."""
        channel = target
        if _is_user(target):
            opened = await self.client.conversations_open(users=target)
            channel = str(opened["channel"]["id"])
        if item.attempts > 1:
            found = await self._find_posted(item, channel)
            if found is not None:
                log.info("event=notification_found_posted kind=%s job=Q-%s", item.kind, item.job_id)
                return found
        posted = await self.client.chat_postMessage(
            channel=channel,
            text=text,
            blocks=blocks.to_dicts(built),
            metadata={"event_type": METADATA_EVENT_TYPE, "event_payload": {"outbox_id": item.id}},
        )
        return {"channel": posted.get("channel"), "ts": posted.get("ts")}

    async def _find_posted(self, item: OutboxItem, channel: str) -> dict[str, Any] | None:
        """The message an earlier try of `item` posted, if Slack has it; None when it cannot be read
        (a missing history scope, say): then the row is posted again, at least once rather than never."""
        try:
            history = await self.client.conversations_history(
                channel=channel,
                oldest=f"{item.created_at.timestamp() - LOOKBACK_S:.6f}",
                include_all_metadata=True,
                limit=LOOKUP_LIMIT,
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.warning("event=posted_lookup_failed job=Q-%s error=%s", item.job_id, error)
            return None
        for message in history.get("messages") or []:
            metadata = message.get("metadata") or {}
            if (
                metadata.get("event_type") == METADATA_EVENT_TYPE
                and (metadata.get("event_payload") or {}).get("outbox_id") == item.id
            ):
                return {"channel": channel, "ts": message.get("ts")}
        return None

    async def _post_decision(self, item: OutboxItem) -> dict[str, Any]:
        assert item.decision_id is not None
        decision = await self.store.decisions.get(item.decision_id)
        if item.target is None:
            return {"skipped": "no channel for decisions (set default_channel)"}
        if decision.state.value != "open":
            return {"skipped": f"closed before it was posted ({decision.state.value})"}
        job = await self.store.jobs.get(decision.job_id)
        text, built = blocks.decision_message(decision, job)
        response = await self._post(item, item.target, text, built)
        await self.store.decisions.set_message(
            decision.id, channel=str(response["channel"]), ts=str(response["ts"])
        )
        return response

    async def _update_decision(self, item: OutboxItem) -> dict[str, Any]:
        assert item.decision_id is not None
        # The post's row before the decision: its sender records the message before settling the row, so a
        # settled post's message is on the decision. The other way round, a post settled by another replica
        # between the two reads would look like one never made, and the update would be lost.
        if await self.store.outbox.pending_for_decision(item.decision_id, "decision.opened"):
            raise Deferred(f"D-{item.decision_id}")
        decision = await self.store.decisions.get(item.decision_id)
        if decision.message_ts is None or decision.channel is None:
            return {"skipped": "the decision was never posted"}
        job = await self.store.jobs.get(decision.job_id)
        text, built = blocks.closed_decision_message(decision, job)
        updated = await self.client.chat_update(
            channel=decision.channel, ts=decision.message_ts, text=text, blocks=blocks.to_dicts(built)
        )
        return {"channel": updated.get("channel"), "ts": updated.get("ts")}
