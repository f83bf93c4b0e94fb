"""Block Kit for queuebot's messages, built with slack_sdk.models (which enforce Slack's field limits);
this module also keeps every message within 50 blocks and truncates long agent output."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from store.models import Decision, Job
from store.states import AnswerSource, DecisionKind, DecisionState

#: Slack's limits that slack_sdk.models does not check for us, or that we must stay under when truncating.
MAX_BLOCKS_PER_MESSAGE = 50
SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150
BUTTON_TEXT_LIMIT = 75
#: Action ids the handlers route on.
ANSWER_ACTION_PREFIX = "answer:"
OTHER_ACTION = "answer_other"
EVIDENCE_ACTION = "show_evidence"
ACKNOWLEDGE_ACTION = "acknowledge"
RETRY_ACTION = "job_retry"
CANCEL_ACTION = "job_cancel"


def truncate(text: str, limit: int, *, marker: str = "…") -> str:
    """Text cut to `limit` characters, marked where it was cut."""
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def answer_value(decision: Decision, option_value: str) -> str:
    """A button's value names the decision and the option, so a click is self-contained."""
    return f"{decision.ref}:{option_value}"


def parse_answer_value(value: str) -> tuple[int, str]:
    """(decision id, option value) from a button value; ValueError when it is not one of ours."""
    ref, sep, option = value.partition(":")
    if not sep or not ref.startswith("D-") or not ref[2:].isdigit() or not option:
        raise ValueError(f"not a decision button value: {value!r}")
    return int(ref[2:]), option


def decision_block_id(decision_id: int) -> str:
    """The block that holds a decision's buttons."""
    return f"decision-{decision_id}"


def parse_clicked_answer(value: str, block_id: str | None) -> tuple[int, str]:
    """(decision id, option value) of a click on a decision's button; ValueError when the value is not one
    of ours, or names another decision than the block it was clicked in (a forged value)."""
    decision_id, option = parse_answer_value(value)
    if block_id != decision_block_id(decision_id):
        raise ValueError(f"button value {value!r} does not belong to block {block_id!r}")
    return decision_id, option


def _output_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def _context(job: Job) -> ContextBlock:
    owner = f" · owner <@{job.owner}>" if job.owner else ""
    return ContextBlock(
        elements=[
            MarkdownTextObject(
                text=f"*{job.ref}* · `{job.type}` · {job.priority.value} · lane {job.lane}{owner}"
            )
        ]
    )


def _buttons(decision: Decision, job: Job) -> ActionsBlock:
    elements: list[ButtonElement] = []
    for option in decision.options:
        confirm = (
            ConfirmObject(
                title="Are you sure?", text=truncate(option.confirm, 300), confirm=option.label[:30]
            )
            if option.confirm
            else None
        )
        elements.append(
            ButtonElement(
                text=truncate(option.label, BUTTON_TEXT_LIMIT),
                action_id=f"{ANSWER_ACTION_PREFIX}{option.value}"[:255],
                value=answer_value(decision, option.value),
                style=option.style,
                confirm=confirm,
            )
        )
    if decision.allow_other:
        elements.append(ButtonElement(text="Other…", action_id=OTHER_ACTION, value=decision.ref))
    if decision.kind is DecisionKind.REVIEW:
        elements.append(ButtonElement(text="Evidence", action_id=EVIDENCE_ACTION, value=job.ref))
    return ActionsBlock(block_id=decision_block_id(decision.id), elements=elements)


def decision_message(decision: Decision, job: Job) -> tuple[str, list[Block]]:
    """The message asking people to decide: the question, the job, and one button per option."""
    blocks: list[Block] = [
        HeaderBlock(text=truncate(f"Decision needed: {decision.question}", HEADER_TEXT_LIMIT)),
        SectionBlock(text=truncate(decision.question, SECTION_TEXT_LIMIT)),
    ]
    if decision.kind is DecisionKind.REVIEW:
        blocks += review_blocks(decision, job)
    blocks += [_context(job), _buttons(decision, job)]
    return f"{job.ref} needs a decision: {decision.question}", blocks[:MAX_BLOCKS_PER_MESSAGE]


def review_blocks(decision: Decision, job: Job) -> list[Block]:
    """The proposed output (cut to fit; the Evidence button shows all), why it needs a human, a summary."""
    details = decision.details or {}
    proposal = _output_text(job.result)
    shown = truncate(proposal, SECTION_TEXT_LIMIT - 8, marker="\n… (cut: see Evidence)")
    blocks: list[Block] = [DividerBlock(), SectionBlock(text=f"```{shown}```")]
    why = details.get("why")
    summary = details.get("summary")
    if why or summary:
        lines = [f"*Why a human:* {why}" if why else "", f"*Evidence:* {summary}" if summary else ""]
        blocks.append(
            SectionBlock(text=truncate("\n".join(line for line in lines if line), SECTION_TEXT_LIMIT))
        )
    return blocks


def outcome_line(decision: Decision) -> str:
    """Who answered what and when, or why nobody did."""
    if decision.state is DecisionState.ANSWERED:
        when = decision.answered_at.strftime("%Y-%m-%d %H:%M UTC") if decision.answered_at else ""
        if decision.answer_source is AnswerSource.TIMEOUT_DEFAULT:
            return f"Timed out: the default *{decision.answer}* was used ({when})"
        if decision.answer_source is AnswerSource.AUTO_RULE:
            return f"Answered *{decision.answer}* by {decision.answered_by} ({when})"
        return f"<@{decision.answered_by}> answered *{decision.answer}* ({when})"
    if decision.state is DecisionState.EXPIRED:
        return "Timed out with no default: the job was escalated"
    return "Closed: the job no longer needs this decision"


def closed_decision_message(decision: Decision, job: Job) -> tuple[str, list[Block]]:
    """The same message once decided: the outcome in place of the buttons."""
    outcome = outcome_line(decision)
    blocks: list[Block] = [
        HeaderBlock(text=truncate(f"Decision: {decision.question}", HEADER_TEXT_LIMIT)),
        SectionBlock(text=truncate(decision.question, SECTION_TEXT_LIMIT)),
        _context(job),
        SectionBlock(text=truncate(f":white_check_mark: {outcome}", SECTION_TEXT_LIMIT)),
    ]
    return f"{decision.ref}: {outcome}", blocks


def escalation_message(
    job: Job, level: int, overdue_s: float, decision: Decision | None
) -> tuple[str, list[Block]]:
    """An overdue item, sent by DM to one level of the ladder, with Acknowledge and ways to act on it."""
    minutes = max(1, round(overdue_s / 60))
    text = f"{job.ref} ({job.type}) is {minutes} min past its SLA and is {job.state.value.replace('_', ' ')}"
    blocks: list[Block] = [
        HeaderBlock(text=truncate(f"Overdue: {job.ref}", HEADER_TEXT_LIMIT)),
        SectionBlock(text=truncate(f"{text}. Escalation level {level}.", SECTION_TEXT_LIMIT)),
        _context(job),
    ]
    if decision is not None and decision.state is DecisionState.OPEN:
        blocks += [
            SectionBlock(text=truncate(decision.question, SECTION_TEXT_LIMIT)),
            _buttons(decision, job),
        ]
    elements = [
        ButtonElement(text="Acknowledge", action_id=ACKNOWLEDGE_ACTION, value=job.ref, style="primary")
    ]
    if decision is None or decision.state is not DecisionState.OPEN:
        # Nothing to answer: the ways to act on the job itself (the same as /queue retry and cancel).
        elements += [
            ButtonElement(text="Retry", action_id=RETRY_ACTION, value=job.ref),
            ButtonElement(
                text="Cancel",
                action_id=CANCEL_ACTION,
                value=job.ref,
                style="danger",
                confirm=ConfirmObject(
                    title=f"Cancel {job.ref}?",
                    text="The job stops and will not run again.",
                    confirm="Cancel it",
                ),
            ),
        ]
    blocks.append(ActionsBlock(block_id=f"escalation-{job.id}-{level}", elements=elements))
    return text, blocks


def job_note_message(job: Job) -> tuple[str, list[Block]]:
    """A note to an owner or a channel about a job that needs attention or has finished."""
    reason = f": {job.reason}" if job.reason else ""
    text = f"{job.ref} ({job.type}) is {job.state.value.replace('_', ' ')}{reason}"
    return text, [SectionBlock(text=truncate(text, SECTION_TEXT_LIMIT)), _context(job)]


def to_dicts(blocks: list[Block]) -> list[dict[str, Any]]:
    """Serialise (slack_sdk validates each block's limits here) and enforce the per-message block limit."""
    if len(blocks) > MAX_BLOCKS_PER_MESSAGE:
        raise ValueError(f"{len(blocks)} blocks; a Slack message holds at most {MAX_BLOCKS_PER_MESSAGE}")
    return [block.to_dict() for block in blocks]


#: Slack's limit for a modal.
MAX_BLOCKS_PER_MODAL = 100


def evidence_modal(job: Job, events: list[Any]) -> dict[str, Any]:
    """A modal with the job's whole evidence trail (newest last) and its full output."""
    body: list[Block] = [_context(job)]
    if job.result is not None:
        body.append(SectionBlock(text=f"```{truncate(_output_text(job.result), SECTION_TEXT_LIMIT - 6)}```"))
    room = MAX_BLOCKS_PER_MODAL - len(body) - 1
    shown = events[-room:]
    if len(events) > len(shown):
        body.append(
            ContextBlock(elements=[MarkdownTextObject(text=f"{len(events) - len(shown)} earlier events")])
        )
    for event in shown:
        move = f" {event.from_state or ''}→{event.to_state}" if event.to_state else ""
        why = f" — {event.reason}" if event.reason else ""
        line = f"`{event.at:%Y-%m-%d %H:%M:%S}` *{event.kind}* by {event.actor}{move}{why}"
        body.append(SectionBlock(text=truncate(line, SECTION_TEXT_LIMIT)))
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": truncate(f"Evidence {job.ref}", 24)},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [block.to_dict() for block in body],
    }


COMMENT_CALLBACK = "decision_comment"
COMMENT_BLOCK = "comment"
COMMENT_INPUT = "comment_text"
#: What the modal asks for, by the option that needs words with it.
COMMENT_PROMPTS = {
    "reject": ("Reject", "Why is it rejected?"),
    "changes": ("Request changes", "What should change? The job runs again with this."),
    OTHER_ACTION: ("Another answer", "Your answer"),
}


def comment_modal(decision: Decision, option: str) -> dict[str, Any]:
    """A modal asking for a reason (Reject), feedback (Request changes) or a free-text answer (Other…);
    `private_metadata` carries the decision and the option, so the submission is self-contained."""
    title, label = COMMENT_PROMPTS[option]
    return {
        "type": "modal",
        "callback_id": COMMENT_CALLBACK,
        "private_metadata": f"{decision.ref}:{option}",
        "title": {"type": "plain_text", "text": truncate(title, 24)},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            SectionBlock(text=truncate(decision.question, SECTION_TEXT_LIMIT)).to_dict(),
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "label": {"type": "plain_text", "text": truncate(label, 2000)},
                "element": {
                    "type": "plain_text_input",
                    "action_id": COMMENT_INPUT,
                    "multiline": True,
                    "max_length": 3000,
                },
            },
        ],
    }
