"""The payloads Slack sends to an app: slash commands, block_actions, view_submission and events.

Shapes follow Slack's documentation and bolt-python's fixtures (see shared/slack/PAYLOADS.md). Builders take
the workspace so ids, names, messages and views are the ones the fake actually holds.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

from sandbox.workspace import Json, User, View, Workspace

VERIFICATION_TOKEN = "sandbox-verification-token"


def _user_json(ws: Workspace, user: User) -> Json:
    return {"id": user.id, "username": user.name, "name": user.name, "team_id": ws.team.id}


def _team_json(ws: Workspace) -> Json:
    return {"id": ws.team.id, "domain": ws.team.domain}


def slash_command(
    ws: Workspace, user: User, channel: str, command: str, text: str, response_url: str, trigger_id: str
) -> dict[str, str]:
    """The form fields of a slash command."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": ws.team.id,
        "team_domain": ws.team.domain,
        "enterprise_id": "",
        "enterprise_name": "",
        "channel_id": channel,
        "channel_name": ws.channel_name(channel),
        "user_id": user.id,
        "user_name": user.name,
        "command": command,
        "text": text,
        "api_app_id": ws.team.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def block_id_of(block: Mapping[str, Any], index: int) -> str:
    """A block's id (stored blocks always have one; this covers hand-made ones)."""
    given = block.get("block_id")
    if isinstance(given, str):
        return given
    return hashlib.sha1(f"{index}:{block.get('type')}".encode()).hexdigest()[:5]


def _interactive(blocks: list[Json]) -> Iterator[tuple[str, Json]]:
    for index, block in enumerate(blocks):
        block_id = block_id_of(block, index)
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            yield block_id, element
        if isinstance(block.get("accessory"), dict):
            yield block_id, block["accessory"]


def find_element(blocks: list[Json], action_id: str, value: str | None = None) -> tuple[str, Json]:
    """The block id and element with this action_id (and, for buttons sharing one, this value)."""
    for block_id, element in _interactive(blocks):
        if element.get("action_id") != action_id:
            continue
        if value is None or element.get("type") != "button" or element.get("value") == value:
            return block_id, element
    raise LookupError(f"no element with action_id={action_id!r} value={value!r}")


def _options(element: Mapping[str, Any]) -> list[Json]:
    options: list[Json] = list(element.get("options", []))
    for group in element.get("option_groups", []):
        options.extend(group.get("options", []))
    return options


def action_json(ws: Workspace, block_id: str, element: Json, value: str | None) -> Json:
    """The `actions[0]` entry for a click on a button, or a choice in a select or overflow menu."""
    action: Json = {
        "type": element.get("type"),
        "action_id": element.get("action_id"),
        "block_id": block_id,
        "action_ts": ws.next_ts(),
    }
    if element.get("type") == "button":
        action.update(text=element.get("text"), value=element.get("value"))
        if "style" in element:
            action["style"] = element["style"]
        return action
    chosen = [o for o in _options(element) if o.get("value") == value]
    if chosen:
        action["selected_option"] = copy.deepcopy(chosen[0])
    elif value is not None:
        action[_SELECTED.get(str(element.get("type")), "value")] = value
    return action


_SELECTED = {
    "users_select": "selected_user",
    "conversations_select": "selected_conversation",
    "channels_select": "selected_channel",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
}


def block_actions(
    ws: Workspace,
    user: User,
    action: Json,
    *,
    trigger_id: str,
    response_url: str | None,
    channel: str | None = None,
    message: Json | None = None,
    is_ephemeral: bool = False,
    view: Json | None = None,
) -> Json:
    """A `block_actions` payload for a click in a message (`channel` + `message`) or a view (`view`)."""
    payload: Json = {
        "type": "block_actions",
        "user": _user_json(ws, user),
        "api_app_id": ws.team.app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "team": _team_json(ws),
        "enterprise": None,
        "is_enterprise_install": False,
        "actions": [action],
        "state": {"values": {}},
    }
    if view is not None:
        payload["container"] = {"type": "view", "view_id": view["id"]}
        payload["view"] = view
        return payload
    assert channel is not None and message is not None
    payload["container"] = {
        "type": "message",
        "message_ts": message["ts"],
        "channel_id": channel,
        "is_ephemeral": is_ephemeral,
    }
    payload["channel"] = {"id": channel, "name": ws.channel_name(channel)}
    if not is_ephemeral:
        payload["message"] = message
    payload["response_url"] = response_url
    return payload


def _state_entry(element: Json, given: Any) -> Json:
    """One `state.values[block_id][action_id]` entry, from a plain value (or list for multi-selects)."""
    kind = str(element.get("type"))
    entry: Json = {"type": kind}
    if kind in ("static_select", "radio_buttons", "external_select"):
        entry["selected_option"] = next(
            (copy.deepcopy(o) for o in _options(element) if o.get("value") == given), None
        )
    elif kind in ("multi_static_select", "checkboxes"):
        wanted = given if isinstance(given, list) else []
        entry["selected_options"] = [copy.deepcopy(o) for o in _options(element) if o.get("value") in wanted]
    elif kind.startswith("multi_"):
        entry["selected_" + kind.removeprefix("multi_").removesuffix("_select") + "s"] = given or []
    elif kind in _SELECTED:
        entry[_SELECTED[kind]] = given
    else:
        entry["value"] = given
    return entry


def state_values(blocks: list[Json], values: Mapping[str, Mapping[str, Any]]) -> Json:
    """`view.state.values` for every input block, filled from `values[block_id][action_id]` (else empty)."""
    state: Json = {}
    for index, block in enumerate(blocks):
        element = block.get("element")
        if block.get("type") != "input" or not isinstance(element, dict):
            continue
        block_id = block_id_of(block, index)
        action_id = str(element.get("action_id", "input"))
        given = values.get(block_id, {}).get(action_id)
        state[block_id] = {action_id: given if isinstance(given, dict) else _state_entry(element, given)}
    return state


def view_submission(
    ws: Workspace, user: User, view: View, values: Mapping[str, Mapping[str, Any]], trigger_id: str
) -> Json:
    """A `view_submission` payload for a modal with its input state."""
    view_json = ws.view_json(view)
    view_json["state"] = {"values": state_values(view_json["blocks"], values)}
    return {
        "type": "view_submission",
        "team": _team_json(ws),
        "user": _user_json(ws, user),
        "api_app_id": ws.team.app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id,
        "view": view_json,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def event_callback(ws: Workspace, event: Json) -> Json:
    """An Events API envelope around `event`."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": ws.team.id,
        "api_app_id": ws.team.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": "Ev" + secrets.token_hex(5).upper(),
        "event_time": int(ws.clock()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": ws.team.id,
                "user_id": ws.team.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + secrets.token_hex(12),
    }


def app_home_opened(ws: Workspace, user: User, tab: str = "home") -> Json:
    """An `app_home_opened` event_callback; carries the published Home view when there is one."""
    event: Json = {
        "type": "app_home_opened",
        "user": user.id,
        "channel": ws.open_dm([user.id]),
        "tab": tab,
        "event_ts": ws.next_ts(),
    }
    home = ws.views.get(ws.home.get(user.id, ""))
    if tab == "home" and home is not None:
        event["view"] = ws.view_json(home)
    return event_callback(ws, event)


def url_verification(challenge: str) -> Json:
    """The handshake Slack sends when the request URL is set; the app must echo `challenge`."""
    return {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
