"""`/queue new`: a modal built from the job type's input model, and its submission."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import truncate
from bot.engine import Engine
from handlers.command_text import infer_value
from store.errors import InvalidInput, QueuebotError

NEW_JOB_CALLBACK = "new_job"
TYPE_BLOCK = "job_type"
TYPE_INPUT = "job_type_value"
JSON_BLOCK = "input_json"
FIELD_ACTION = "value"
#: Slack's limit on options in a static select.
MAX_SELECT_OPTIONS = 100


def _text(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def new_job_modal(engine: Engine, type_name: str | None, channel: str) -> dict[str, Any]:
    """With a type: one input per field of its model. Without: a type menu and the input as JSON."""
    metadata = json.dumps({"type": type_name, "channel": channel})
    if type_name is None:
        options = [{"text": _text(truncate(name, 75)), "value": name} for name in engine.types.names()]
        blocks: list[dict[str, Any]] = [
            {
                "type": "input",
                "block_id": TYPE_BLOCK,
                "label": _text("Job type"),
                "element": {
                    "type": "static_select",
                    "action_id": TYPE_INPUT,
                    "options": options[:MAX_SELECT_OPTIONS],
                },
            },
            {
                "type": "input",
                "block_id": JSON_BLOCK,
                "label": _text("Input (a JSON object)"),
                "optional": True,
                "element": {"type": "plain_text_input", "action_id": FIELD_ACTION, "multiline": True},
            },
        ]
    else:
        model = engine.types.get(type_name).input
        blocks = [
            {
                "type": "input",
                "block_id": f"field:{name}"[:255],
                "label": _text(truncate(name, 2000)),
                "optional": not field.is_required(),
                "hint": _text(truncate(field.description or str(field.annotation), 2000)),
                "element": {"type": "plain_text_input", "action_id": FIELD_ACTION},
            }
            for name, field in model.model_fields.items()
        ][:100]
    title = truncate(f"New {type_name}" if type_name else "New job", 24)
    return {
        "type": "modal",
        "callback_id": NEW_JOB_CALLBACK,
        "private_metadata": metadata,
        "title": _text(title),
        "submit": _text("Create"),
        "close": _text("Cancel"),
        "blocks": blocks,
    }


def _submitted(values: dict[str, Any]) -> tuple[str | None, dict[str, Any] | str]:
    """(chosen type, input) from a submitted modal's state."""
    chosen = values.get(TYPE_BLOCK, {}).get(TYPE_INPUT, {}).get("selected_option") or {}
    raw_json = values.get(JSON_BLOCK, {}).get(FIELD_ACTION, {}).get("value")
    if TYPE_BLOCK in values:
        return chosen.get("value"), raw_json or "{}"
    fields = {
        block_id.removeprefix("field:"): infer_value(str(element[FIELD_ACTION]["value"]))
        for block_id, element in values.items()
        if block_id.startswith("field:") and element.get(FIELD_ACTION, {}).get("value") not in (None, "")
    }
    return None, fields


def _field_errors(exc: InvalidInput, values: dict[str, Any]) -> dict[str, str]:
    """Map 'input for T: field: message; …' onto the modal's blocks."""
    errors: dict[str, str] = {}
    for part in str(exc).split(": ", 1)[-1].split("; "):
        field, _, message = part.partition(": ")
        block = (
            f"field:{field}" if f"field:{field}" in values else (JSON_BLOCK if JSON_BLOCK in values else None)
        )
        if block is not None:
            errors.setdefault(block, truncate(message or part, 150))
    return errors or {next(iter(values), JSON_BLOCK): truncate(str(exc), 150)}


def register(app: AsyncApp, engine: Engine) -> None:
    @app.view(NEW_JOB_CALLBACK)
    async def new_job_submitted(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient
    ) -> None:
        user = str(body["user"]["id"])
        metadata = json.loads(view.get("private_metadata") or "{}")
        values = view.get("state", {}).get("values", {})
        chosen, data = _submitted(values)
        type_name = metadata.get("type") or chosen
        try:
            enqueued = await engine.enqueue(
                str(type_name),
                data,
                actor=user,
                owner=user,
                channel=metadata.get("channel"),
                key=f"slack-view:{view.get('id')}",
            )
        except InvalidInput as invalid:
            await ack(response_action="errors", errors=_field_errors(invalid, values))
            return
        except (QueuebotError, ValidationError) as refused:
            await ack(
                response_action="errors", errors={next(iter(values), TYPE_BLOCK): truncate(str(refused), 150)}
            )
            return
        await ack()
        if metadata.get("channel"):
            await client.chat_postEphemeral(
                channel=metadata["channel"],
                user=user,
                text=f"Created {enqueued.job.ref} (`{enqueued.job.type}`).",
            )
