"""The App Home tab: the board at a glance, and what is waiting on the person looking."""

from __future__ import annotations

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.blocks import SECTION_TEXT_LIMIT, truncate
from bot.durations import format_age
from bot.engine import Engine
from store.states import JobState

#: Slack's limit for a Home tab.
MAX_HOME_BLOCKS = 100
#: Items listed under "Waiting on you" before the rest are counted instead.
MAX_WAITING_ITEMS = 20
NEEDS_PEOPLE = [
    JobState.WAITING_DECISION,
    JobState.NEEDS_REVIEW,
    JobState.ESCALATED,
    JobState.BLOCKED,
    JobState.PENDING,
]


async def home_view(engine: Engine, viewer: str) -> View:
    """The Home tab for one person, within Slack's 100-block limit."""
    status = await engine.status()
    stats = status.stats
    counts = "  ".join(
        f"*{state.replace('_', ' ')}* {count}" for state, count in stats.states.items() if count
    )
    oldest = ", ".join(
        f"{state.replace('_', ' ')} {format_age(age)}" for state, age in stats.oldest_waiting_s.items()
    )
    blocks: list[Block] = [
        HeaderBlock(text="queuebot"),
        SectionBlock(text=truncate(counts or "The queue is empty.", SECTION_TEXT_LIMIT)),
        SectionBlock(
            fields=[
                MarkdownTextObject(text=f"*SLA breaches*\n{stats.sla_breaches}"),
                MarkdownTextObject(text=f"*Spend today*\n${status.spend_today.get('*', 0.0):.2f}"),
                MarkdownTextObject(text=f"*Oldest waiting*\n{oldest or '—'}"),
                MarkdownTextObject(
                    text="*Paused*\n"
                    + (", ".join(f"{p.scope} {p.name}".strip() for p in status.pauses) or "nothing")
                ),
            ]
        ),
        DividerBlock(),
        HeaderBlock(text="Waiting on you"),
    ]
    mine = await engine.store.jobs.list(states=NEEDS_PEOPLE, owner=viewer, limit=MAX_WAITING_ITEMS + 1)
    decisions = [
        d
        for d in await engine.store.decisions.open(limit=200)
        if viewer in d.answerers.users or d.answerers.anyone or engine.authority.is_admin(viewer)
    ]
    lines = [
        f"• *{job.ref}* `{job.type}` is {job.state.value.replace('_', ' ')}: {job.reason or ''}"
        for job in mine
    ]
    lines += [f"• *{d.ref}* on Q-{d.job_id}: {d.question}" for d in decisions]
    if not lines:
        blocks.append(SectionBlock(text="Nothing is waiting on you."))
    for line in lines[:MAX_WAITING_ITEMS]:
        blocks.append(SectionBlock(text=truncate(line, SECTION_TEXT_LIMIT)))
    if len(lines) > MAX_WAITING_ITEMS:
        blocks.append(
            ContextBlock(elements=[MarkdownTextObject(text=f"…and {len(lines) - MAX_WAITING_ITEMS} more")])
        )
    return View(type="home", blocks=blocks[:MAX_HOME_BLOCKS])
