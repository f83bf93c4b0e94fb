"""The /queue slash command: parse the text, call the engine, answer the person (ephemerally)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.early_ack import acknowledged_early
from bot.engine import Engine
from handlers.command_text import (
    USAGE,
    AckCommand,
    AddCommand,
    CancelCommand,
    Command,
    CommandTextError,
    HelpCommand,
    ListCommand,
    NewCommand,
    PauseCommand,
    ResumeCommand,
    RetryCommand,
    ShowCommand,
    StatsCommand,
    parse_command_text,
)
from handlers.new_job_modal import new_job_modal
from store.errors import InvalidInput, QueuebotError
from store.models import Job

log = logging.getLogger("queuebot.handlers")

#: Jobs listed by `/queue list`.
LIST_LIMIT = 20


def _line(job: Job) -> str:
    reason = f" — {job.reason}" if job.reason else ""
    state = job.state.value.replace("_", " ")
    return f"*{job.ref}* `{job.type}` {state} · {job.priority.value} · {job.lane}{reason}"


async def _add(engine: Engine, command: AddCommand, user: str, channel: str, trigger_id: str) -> str:
    # A retried delivery of the same command carries the same trigger_id: it must not make a second job.
    key = command.idempotency_key or f"slack-command:{trigger_id}"
    options: dict[str, Any] = {"priority": command.priority, "key": key, "owner": user, "channel": channel}
    try:
        enqueued = await engine.enqueue(command.type_name, command.input, actor=user, **options)
    except InvalidInput:
        # `text=123` parses as a number; retry with every scalar as typed and let the model coerce it.
        as_typed = {
            k: command.raw_input.get(k, v) if not isinstance(v, dict | list) else v
            for k, v in command.input.items()
        }
        enqueued = await engine.enqueue(command.type_name, as_typed, actor=user, **options)
    job = enqueued.job
    if not enqueued.created:
        return f"{job.ref} already exists for this request; it is {job.state.value.replace('_', ' ')}."
    return (
        f"Created {job.ref} (`{job.type}`, {job.priority.value}, lane {job.lane}); it is {job.state.value}."
    )


async def _list(engine: Engine, command: ListCommand, user: str) -> str:
    jobs = await engine.store.jobs.list(
        states=[command.state] if command.state else None,
        lane=command.lane,
        owner=user if command.mine else None,
        limit=LIST_LIMIT,
    )
    return "\n".join(_line(job) for job in jobs) or "No jobs match."


async def _show(engine: Engine, command: ShowCommand) -> str:
    view = await engine.show(command.job_id)
    lines = [_line(view.job)]
    lines += [f"{d.ref} [{d.state.value}] {d.question} → {d.answer or '…'}" for d in view.decisions]
    lines += [
        f"`{e.at:%H:%M:%S}` {e.kind} by {e.actor}{f' — {e.reason}' if e.reason else ''}"
        for e in view.events[-10:]
    ]
    return "\n".join(lines)


async def _stats(engine: Engine) -> str:
    status = await engine.status()
    counts = ", ".join(f"{state.replace('_', ' ')} {n}" for state, n in status.stats.states.items() if n)
    return f"{counts or 'The queue is empty.'}\nSLA breaches: {status.stats.sla_breaches}"


async def _operate(engine: Engine, command: Command, user: str) -> str:
    """The commands that act on one job or scope."""
    match command:
        case CancelCommand():
            job = await engine.cancel(command.job_id, actor=user, reason=command.reason)
            return f"{job.ref} cancelled."
        case RetryCommand():
            return f"{(await engine.retry(command.job_id, actor=user)).ref} is ready again."
        case AckCommand():
            return f"{(await engine.acknowledge(command.job_id, actor=user)).ref} acknowledged."
        case PauseCommand():
            held = await engine.pause(command.target, actor=user, reason=command.reason)
            return f"Paused {command.target} ({held} jobs held)."
        case ResumeCommand():
            resumed = await engine.resume(command.target, actor=user)
            return f"Resumed {command.target} ({resumed} jobs ready)."
    return USAGE


async def _dispatch(engine: Engine, command: Command, *, user: str, channel: str, trigger_id: str) -> str:
    match command:
        case AddCommand():
            return await _add(engine, command, user, channel, trigger_id)
        case ListCommand():
            return await _list(engine, command, user)
        case ShowCommand():
            return await _show(engine, command)
        case StatsCommand():
            return await _stats(engine)
        case HelpCommand():
            return USAGE
    return await _operate(engine, command, user)


async def run_command(engine: Engine, text: str, *, user: str, channel: str, trigger_id: str) -> str:
    """The reply to one /queue command; refusals and mistakes come back as text, never as an exception."""
    try:
        command = parse_command_text(text)
        return await _dispatch(engine, command, user=user, channel=channel, trigger_id=trigger_id)
    except CommandTextError as mistake:
        return str(mistake)
    except InvalidInput as invalid:
        return f"{invalid}\n\n*Usage*\n{USAGE}"
    except QueuebotError as refused:
        return str(refused)


async def _opened_new_job_modal(
    engine: Engine, body: dict[str, Any], client: AsyncWebClient, ack: AsyncAck
) -> bool:
    """`/queue new [TYPE]` opens a modal instead of replying."""
    try:
        command = parse_command_text(str(body.get("text", "")))
    except CommandTextError:
        return False
    if not isinstance(command, NewCommand):
        return False
    if command.type_name is not None and command.type_name not in engine.types:
        await ack(text=f"unknown job type {command.type_name!r} (known: {', '.join(engine.types.names())})")
        return True
    await ack()
    modal = new_job_modal(engine, command.type_name, str(body["channel_id"]))
    await client.views_open(trigger_id=str(body["trigger_id"]), view=modal)
    return True


def register(app: AsyncApp, engine: Engine, *, after_change: Callable[[], None] | None = None) -> None:
    """Attach the /queue listener."""

    @app.command("/queue")
    async def queue_command(
        ack: AsyncAck,
        body: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        request: AsyncBoltRequest,
    ) -> None:
        if await _opened_new_job_modal(engine, body, client, ack):
            return
        # Usually the reply goes back in the acknowledgement. In a crowd of Slack requests waiting for theirs,
        # acknowledge at once (or it already was: bot.early_ack) and reply through the response_url.
        in_a_burst = engine.wakeup.foreground.crowded or acknowledged_early(request.headers)
        if in_a_burst:
            await ack()
            await engine.wakeup.foreground.wait_quiet(besides=1)  # the others' acknowledgements first
        reply = await run_command(
            engine,
            str(body.get("text", "")),
            user=str(body["user_id"]),
            channel=str(body["channel_id"]),
            trigger_id=str(body.get("trigger_id", "")),
        )
        if in_a_burst:
            await respond(text=reply, response_type="ephemeral")
        else:
            await ack(text=reply)  # ephemeral to the person who typed it
        if after_change is not None:
            after_change()
        log.info("event=queue_command user=%s text=%r", body.get("user_id"), str(body.get("text", ""))[:200])
