"""The built-in `command` job type: runs any agent program and speaks JSON lines with it.

The agent writes one JSON object per line on stdout, each with a "type":
  progress {message} · evidence {summary, details} · cost {usd} · rate_limit {retry_after_seconds}
  decision_request {decision_id, question, options, timeout_seconds, default}
  result {result, review?: {summary, why, question}}
Answers go back as {"type": "decision_response", decision_id, answer, answered_by, source} on its stdin in
held mode (the slot stays held while it waits); in durable mode the run ends and the command runs again
later with every answer so far in QUEUEBOT_ANSWERS (a JSON object by decision_id), so no process waits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any, Literal

from pydantic import BaseModel, Field

from bot.context import JobContext, answer_of, as_option
from bot.jobtypes import job_type
from bot.outcomes import Ambiguous, Complete, RateLimited, Review, TransientError
from store.models import Answer, AnswererPolicy, DecisionSpec
from store.states import DecisionState

log = logging.getLogger("queuebot.command")

#: How often a held run looks for the answer to its open decision.
HELD_POLL_INTERVAL_S = 0.25
#: Kept from stderr for the failure reason.
STDERR_TAIL_CHARS = 2000
#: A line longer than this is not a protocol message.
MAX_LINE_BYTES = 4 * 1024 * 1024


class CommandInput(BaseModel):
    argv: list[str] = Field(min_length=1)
    mode: Literal["held", "durable"] = "durable"
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


def _answer_message(decision_id: str, answer: Answer) -> bytes:
    message = {"type": "decision_response", "decision_id": decision_id, "answer": answer.value,
               "answered_by": answer.by, "source": answer.source.value, "comment": answer.comment}
    return (json.dumps(message) + "\n").encode()


class _Session:
    """One run of the agent program."""

    def __init__(self, ctx: JobContext, data: CommandInput) -> None:
        self.ctx = ctx
        self.data = data
        self.result: Any = None
        self.has_result = False
        self.review: dict[str, Any] | None = None

    def environment(self, answers: dict[str, Any]) -> dict[str, str]:
        job = self.ctx.job
        return {
            **os.environ, **self.data.env,
            "QUEUEBOT_JOB_ID": job.ref, "QUEUEBOT_ATTEMPT": str(self.ctx.attempt),
            "QUEUEBOT_MODE": self.data.mode, "QUEUEBOT_ANSWERS": json.dumps(answers),
            "QUEUEBOT_FEEDBACK": json.dumps(self.ctx.feedback),
        }

    async def handle(self, message: dict[str, Any], proc: asyncio.subprocess.Process) -> None:
        kind = message.get("type")
        ctx = self.ctx
        if kind == "progress":
            await ctx.progress(str(message.get("message", "")))
        elif kind == "evidence":
            details = message.get("details") if isinstance(message.get("details"), dict) else {}
            await ctx.evidence(str(message.get("summary", "")), **details)
        elif kind == "cost":
            await ctx.spend(float(message.get("usd", 0.0)))
        elif kind == "rate_limit":
            raise RateLimited(float(message.get("retry_after_seconds", message.get("retry_after", 60.0))))
        elif kind == "decision_request":
            answer = await self.decide(message)
            assert proc.stdin is not None
            proc.stdin.write(_answer_message(str(message["decision_id"]), answer))
            await proc.stdin.drain()
        elif kind == "result":
            self.result, self.has_result = message.get("result"), True
            review = message.get("review")
            self.review = review if isinstance(review, dict) else None
        else:
            await ctx.evidence("agent said something queuebot does not know", message=message)

    async def decide(self, message: dict[str, Any]) -> Answer:
        key = f"cmd:{message['decision_id']}"
        options = message.get("options") or ["yes", "no"]
        kwargs: dict[str, Any] = {
            "default": message.get("default"),
            "timeout": float(message.get("timeout_seconds", 1800)),
            "allow_other": bool(message.get("allow_other", False)),
        }
        if self.data.mode == "durable":
            return await self.ctx.ask(key, str(message.get("question", "")), options, **kwargs)
        return await self.wait_held(key, str(message.get("question", "")), options, kwargs)

    async def wait_held(self, key: str, question: str, options: list[Any], kwargs: dict[str, Any]) -> Answer:
        """Open the decision and wait for it with the process alive, heartbeating meanwhile."""
        ctx = self.ctx
        spec = DecisionSpec(
            key=key, question=question, options=[as_option(option) for option in options],
            default=kwargs["default"], timeout_s=kwargs["timeout"], allow_other=kwargs["allow_other"],
            answerers=ctx.job_type.answerers or AnswererPolicy(),
        )
        decision = await ctx.store.decisions.open_now(ctx.job, spec, channel=ctx.decision_channel)
        while decision.state is DecisionState.OPEN:
            await asyncio.sleep(HELD_POLL_INTERVAL_S)
            await ctx.heartbeat()
            decision = await ctx.store.decisions.get(decision.id)
        if decision.state is not DecisionState.ANSWERED:
            raise Ambiguous(f"{decision.ref} {decision.state.value} with no answer")
        return answer_of(decision)


async def _answers_so_far(ctx: JobContext) -> dict[str, Any]:
    decisions = await ctx.store.decisions.for_job(ctx.job.id)
    return {
        d.key.removeprefix("cmd:"): {"answer": d.answer, "answered_by": d.answered_by,
                                     "source": d.answer_source.value if d.answer_source else None}
        for d in decisions
        if d.key.startswith("cmd:") and d.state is DecisionState.ANSWERED
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@job_type("command", input=CommandInput, lane="heavy", answerers=AnswererPolicy())
async def command(ctx: JobContext, data: CommandInput) -> Any:
    """Runs an agent program that speaks queuebot's JSON-lines protocol."""
    session = _Session(ctx, data)
    try:
        proc = await asyncio.create_subprocess_exec(
            *data.argv, cwd=data.cwd, env=session.environment(await _answers_so_far(ctx)),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=MAX_LINE_BYTES,
        )
    except OSError as exc:
        raise TransientError(f"cannot start {data.argv[0]}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    try:
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                message = None
            if not isinstance(message, dict):
                await ctx.progress(text[:500])
                continue
            await session.handle(message, proc)
        returncode = await proc.wait()
    finally:
        await _stop(proc)
        stderr = (await stderr_task).decode(errors="replace")[-STDERR_TAIL_CHARS:]
    if returncode != 0:
        raise TransientError(f"{data.argv[0]} exited with {returncode}: {stderr.strip() or 'no stderr'}")
    if not session.has_result:
        raise TransientError(f"{data.argv[0]} exited without a result message")
    if session.review is not None:
        return Review(proposal=session.result, summary=str(session.review.get("summary", "")),
                      why=str(session.review.get("why", "the agent asked for review")),
                      question=str(session.review.get("question", "Approve this output?")))
    return Complete(session.result)
