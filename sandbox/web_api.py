"""The Web API methods the bot uses, answering with Slack's shapes and Slack's errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from sandbox.block_kit_rules import message_block_errors, view_errors
from sandbox.workspace import Json, SlackError, Workspace, with_ids

MAX_MESSAGE_TEXT = 40_000


class Args:
    """A method's arguments from the query string and a form or JSON body (form values are strings)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)

    def optional(self, key: str, *, required: bool = False) -> str | None:
        """A string argument; a missing required one is `invalid_arguments`."""
        value = self.values.get(key)
        if value is None or value == "":
            if required:
                raise _invalid_arguments(f"missing required field: {key}")
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def required(self, key: str) -> str:
        """A string argument that must be present."""
        value = self.optional(key, required=True)
        assert value is not None
        return value

    def decoded(self, key: str, bad_format: str) -> Any:
        """A JSON-valued argument (blocks, view), given either decoded or as a JSON string."""
        value = self.values.get(key)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            raise SlackError(bad_format) from exc


Method = Callable[[Workspace, Args], Json]


def _invalid_arguments(*messages: str) -> SlackError:
    return SlackError(
        "invalid_arguments", extra={"response_metadata": {"messages": [f"[ERROR] {m}" for m in messages]}}
    )


def _invalid_blocks(errors: list[str]) -> SlackError:
    return SlackError(
        "invalid_blocks",
        extra={"errors": errors, "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}},
    )


def message_content(args: Args) -> tuple[str | None, list[Json] | None]:
    """The text and blocks of a chat.* call, refused as Slack refuses them."""
    blocks = args.decoded("blocks", "invalid_blocks_format")
    if blocks is not None:
        if not isinstance(blocks, list):
            raise SlackError("invalid_blocks_format")
        errors = message_block_errors(blocks)
        if errors:
            raise _invalid_blocks(errors)
    text = args.optional("text")
    if not text and not blocks and not args.optional("attachments"):
        raise SlackError("no_text")
    if text is not None and len(text) > MAX_MESSAGE_TEXT:
        raise SlackError("msg_too_long")
    return text, blocks


def auth_test(ws: Workspace, args: Args) -> Json:
    """auth.test: who the token belongs to."""
    team = ws.team
    return {
        "url": f"https://{team.domain}.slack.com/",
        "team": team.name,
        "user": team.bot_name,
        "team_id": team.id,
        "user_id": team.bot_user_id,
        "bot_id": team.bot_id,
        "is_enterprise_install": False,
    }


def message_metadata(args: Args) -> Json | None:
    """A message's `metadata`: an `event_type` name and an `event_payload` object, or Slack's error."""
    metadata = args.decoded("metadata", "invalid_metadata_format")
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise SlackError("invalid_metadata_format")
    event_type, payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(event_type, str) or not event_type or not isinstance(payload, dict):
        raise SlackError("invalid_metadata_schema")
    return {"event_type": event_type, "event_payload": payload}


def chat_post_message(ws: Workspace, args: Args) -> Json:
    """chat.postMessage: a new message in a channel, a DM, or a thread."""
    channel = ws.resolve_channel(args.required("channel"))
    text, blocks = message_content(args)
    metadata = message_metadata(args)
    message = ws.bot_message(text or "", blocks, ws.next_ts())
    thread_ts = args.optional("thread_ts")
    if thread_ts is not None:
        message["thread_ts"] = thread_ts
    if metadata is not None:
        message["metadata"] = metadata
    ws.post(channel, message)
    return {"channel": channel, "ts": message["ts"], "message": copy.deepcopy(message)}


def chat_update(ws: Workspace, args: Args) -> Json:
    """chat.update: edit a message in place; omitted text or blocks keep their previous value."""
    channel = ws.resolve_channel(args.required("channel"))
    message = ws.find_message(channel, args.required("ts"))
    text, blocks = message_content(args)
    if text is not None:
        message["text"] = text
    if blocks is not None:
        message["blocks"] = with_ids(blocks)
    message["edited"] = {"user": ws.team.bot_user_id, "ts": ws.next_ts()}
    return {
        "channel": channel,
        "ts": message["ts"],
        "text": message["text"],
        "message": copy.deepcopy(message),
    }


def chat_delete(ws: Workspace, args: Args) -> Json:
    """chat.delete: remove a message."""
    channel = ws.resolve_channel(args.required("channel"))
    ts = args.required("ts")
    ws.delete_message(channel, ts)
    return {"channel": channel, "ts": ts}


def chat_post_ephemeral(ws: Workspace, args: Args) -> Json:
    """chat.postEphemeral: a message only `user` sees in `channel`."""
    channel = ws.resolve_channel(args.required("channel"))
    user = ws.user(args.required("user")).id
    text, blocks = message_content(args)
    message = ws.bot_message(text or "", blocks, ws.next_ts())
    ws.post_ephemeral(channel, user, message)
    return {"message_ts": message["ts"]}


def conversations_open(ws: Workspace, args: Args) -> Json:
    """conversations.open: the DM (or group DM) with `users`, the same id every time."""
    users = args.optional("users")
    if users is None:
        channel = args.optional("channel")
        if channel is None:
            raise SlackError("users_list_not_supplied")
        if channel not in ws.dms:
            raise SlackError("channel_not_found")
        return {"channel": {"id": channel}, "no_op": True, "already_open": True}
    user_ids = [user.strip() for user in users.split(",") if user.strip()]
    already_open = any(ws.dms.get(c) == ",".join(user_ids) for c in ws.dms)
    channel = ws.open_dm(user_ids)
    return {"channel": {"id": channel}, "no_op": already_open, "already_open": already_open}


def _ts_arg(args: Args, key: str, default: float) -> float:
    value = args.optional(key)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise SlackError("invalid_ts_" + key) from exc


def conversations_history(ws: Workspace, args: Args) -> Json:
    """conversations.history: a channel's messages between `oldest` and `latest`, newest first; message
    metadata only with `include_all_metadata`."""
    channel = ws.resolve_channel(args.required("channel"))
    oldest, latest = _ts_arg(args, "oldest", 0.0), _ts_arg(args, "latest", float("inf"))
    inclusive = args.optional("inclusive") in ("true", "1", "True")
    try:
        limit = min(999, max(1, int(args.optional("limit") or 100)))
    except ValueError as exc:
        raise SlackError("invalid_limit") from exc
    with_metadata = args.optional("include_all_metadata") in ("true", "1", "True")

    def within(ts: float) -> bool:
        return (oldest <= ts <= latest) if inclusive else (oldest < ts < latest)

    found = [m for m in reversed(ws.messages.get(channel, [])) if within(float(m["ts"]))]
    shown = [
        {key: value for key, value in m.items() if key != "metadata" or with_metadata}
        for m in copy.deepcopy(found[:limit])
    ]
    return {
        "messages": shown,
        "has_more": len(found) > limit,
        "pin_count": 0,
        "response_metadata": {"next_cursor": ""},
    }


def users_info(ws: Workspace, args: Args) -> Json:
    """users.info: a user's profile and Slack-level roles."""
    return {"user": ws.user(args.required("user")).to_json(ws.team.id)}


def _view_arg(args: Args, expected: Literal["modal", "home"]) -> Json:
    view = args.decoded("view", "invalid_arguments")
    if view is None:
        raise _invalid_arguments("missing required field: view")
    errors = view_errors(view, expected)
    if errors:
        raise _invalid_arguments(*errors)
    assert isinstance(view, dict)
    return view


def views_publish(ws: Workspace, args: Args) -> Json:
    """views.publish: the user's Home tab; a stale `hash` is `hash_conflict`."""
    user = ws.user(args.required("user_id")).id
    view = _view_arg(args, "home")
    current = ws.views.get(ws.home.get(user, ""))
    given_hash = args.optional("hash")
    if current is not None and given_hash is not None and given_hash != current.hash:
        raise SlackError("hash_conflict")
    saved = ws.save_view(user, view, current.id if current else None)
    return {"view": ws.view_json(saved)}


def views_open(ws: Workspace, args: Args) -> Json:
    """views.open: a modal, which needs a fresh trigger_id from an interaction."""
    trigger = args.required("trigger_id")
    view = _view_arg(args, "modal")
    ws.use_trigger(trigger)
    saved = ws.save_view(ws.trigger_user(trigger), view)
    return {"view": ws.view_json(saved)}


def views_push(ws: Workspace, args: Args) -> Json:
    """views.push: a modal on top of the open one."""
    trigger = args.required("trigger_id")
    view = _view_arg(args, "modal")
    ws.use_trigger(trigger)
    saved = ws.save_view(ws.trigger_user(trigger), view)
    return {"view": ws.view_json(saved)}


def views_update(ws: Workspace, args: Args) -> Json:
    """views.update: replace an open view by `view_id` or `external_id`."""
    view_id = args.optional("view_id")
    external_id = args.optional("external_id")
    if view_id is None and external_id is None:
        raise _invalid_arguments("must provide one of view_id, external_id")
    current = ws.views.get(view_id or "") or next(
        (v for v in ws.views.values() if external_id and v.body.get("external_id") == external_id), None
    )
    if current is None:
        raise SlackError("not_found")
    given_hash = args.optional("hash")
    if given_hash is not None and given_hash != current.hash:
        raise SlackError("hash_conflict")
    view = _view_arg(args, current.body["type"])
    saved = ws.save_view(current.user_id, view, current.id)
    return {"view": ws.view_json(saved)}


METHODS: dict[str, Method] = {
    "auth.test": auth_test,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.delete": chat_delete,
    "chat.postEphemeral": chat_post_ephemeral,
    "conversations.history": conversations_history,
    "conversations.open": conversations_open,
    "users.info": users_info,
    "views.publish": views_publish,
    "views.open": views_open,
    "views.push": views_push,
    "views.update": views_update,
}
