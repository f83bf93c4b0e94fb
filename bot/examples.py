"""Example job types a newcomer can run at once; each shows one path through the states."""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from bot.context import JobContext
from bot.jobtypes import Retry, job_type
from bot.outcomes import Ambiguous, MissingInput, Review, TransientError
from store.models import AnswererPolicy

#: How often demo.sleep heartbeats while it sleeps.
SLEEP_HEARTBEAT_EVERY_S = 0.5


class EchoInput(BaseModel):
    text: str


class SleepInput(BaseModel):
    seconds: float = Field(ge=0, le=3600)


class FlakyInput(BaseModel):
    fail_times: int = Field(ge=0, le=100)


class AskInput(BaseModel):
    question: str = Field(min_length=1)


class ReviewInput(BaseModel):
    text: str


class TriageInput(BaseModel):
    ticket: str | None = None
    action: str = "draft"


@job_type("demo.echo", input=EchoInput, lane="fast")
async def echo(ctx: JobContext, data: EchoInput) -> str:
    """Completes at once with the text as its result."""
    await ctx.evidence("echoed the text", length=len(data.text))
    return data.text


@job_type("demo.sleep", input=SleepInput, lane="normal")
async def sleep(ctx: JobContext, data: SleepInput) -> dict[str, float]:
    """Sleeps, heartbeating as it goes (cancel or pause it to see it stop), then completes."""
    deadline = time.monotonic() + data.seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(SLEEP_HEARTBEAT_EVERY_S, left))
        await ctx.heartbeat()
    return {"slept_s": data.seconds}


@job_type(
    "demo.flaky",
    input=FlakyInput,
    lane="normal",
    retry=Retry(max_attempts=10, base_delay_s=0.2, max_delay_s=2.0),
)
async def flaky(ctx: JobContext, data: FlakyInput) -> dict[str, int]:
    """Fails transiently `fail_times` times, then completes (watch retry_scheduled and backoff)."""
    if ctx.attempt <= data.fail_times:
        raise TransientError(f"simulated failure {ctx.attempt} of {data.fail_times}")
    return {"attempts": ctx.attempt}


@job_type("demo.ask", input=AskInput, lane="fast", answerers=AnswererPolicy(anyone=True))
async def ask(ctx: JobContext, data: AskInput) -> str:
    """Asks a decision (approve / deny, anyone may answer, no default) and completes with the answer."""
    await ctx.evidence("asking a person", question=data.question)
    answer = await ctx.ask("question", data.question, ["approve", "deny"])
    return answer.value


@job_type("demo.review", input=ReviewInput, lane="fast", answerers=AnswererPolicy(anyone=True))
async def review(ctx: JobContext, data: ReviewInput) -> Review:
    """Proposes the text for review; Request changes runs it again with the feedback appended."""
    text = data.text
    for note in ctx.feedback:
        text += f"\n[revised for: {note}]"
    return Review(
        proposal=text,
        summary=f"{len(text)} characters drafted",
        why="outgoing text needs a person's approval",
        question="Send this text?",
    )


@job_type("demo.triage", input=TriageInput, lane="fast", may={"read", "draft"}, sla="2m", deadline="10m")
async def triage(ctx: JobContext, data: TriageInput) -> dict[str, str]:
    """Shows the states that need a person: no ticket → pending, an action it may not take (e.g. "send")
    → blocked, ticket "?" → escalated; left waiting, it climbs the SLA ladder after 2 minutes and
    expires after 10."""
    if not data.ticket:
        raise MissingInput("a ticket id (enqueue again with a ticket)")
    ctx.require(data.action)
    if data.ticket == "?":
        raise Ambiguous("the ticket matches two customers; a person must pick one")
    await ctx.evidence("triaged", ticket=data.ticket, action=data.action)
    return {"ticket": data.ticket, "action": data.action}
