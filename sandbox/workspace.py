"""The state of a fake Slack workspace: its team, users, channels, DMs, messages, views and trigger ids."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
Clock = Callable[[], float]

TRIGGER_TTL_SECONDS = 3.0


class SlackError(Exception):
    """A Web API error: answered as `{"ok": false, "error": code, **extra}` with a status and headers."""

    def __init__(
        self,
        code: str,
        *,
        status: int = 200,
        extra: Json | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}


def _short_id(seed: object) -> str:
    return hashlib.sha1(json.dumps(seed, sort_keys=True).encode()).hexdigest()[:5]


def with_ids(blocks: list[Json]) -> list[Json]:
    """A copy of `blocks` as Slack stores them: each block with a `block_id`, each element an `action_id`."""
    stored = copy.deepcopy(blocks)
    for index, block in enumerate(stored):
        block.setdefault("block_id", _short_id([index, block]))
        elements = list(block.get("elements", [])) if block.get("type") == "actions" else []
        elements += [block[key] for key in ("accessory", "element") if isinstance(block.get(key), dict)]
        for position, element in enumerate(elements):
            if element.get("type") not in ("image", None):
                element.setdefault("action_id", _short_id([index, position, element]))
    return stored


@dataclass(frozen=True)
class Team:
    """The workspace itself and the app installed in it."""

    id: str = "T0SANDBOX1"
    domain: str = "sandbox"
    name: str = "Sandbox"
    app_id: str = "AQUEUEBOT1"
    bot_id: str = "BQUEUEBOT1"
    bot_user_id: str = "UQUEUEBOT1"
    bot_name: str = "queuebot"


@dataclass(frozen=True)
class User:
    """A member of the workspace, with Slack's own owner/admin flags."""

    id: str
    name: str
    real_name: str = ""
    is_owner: bool = False
    is_admin: bool = False
    is_bot: bool = False
    tz: str = "UTC"

    def to_json(self, team_id: str) -> Json:
        """The `user` object of users.info."""
        real = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": real,
            "deleted": False,
            "is_owner": self.is_owner,
            "is_admin": self.is_admin,
            "is_primary_owner": self.is_owner,
            "is_bot": self.is_bot,
            "tz": self.tz,
            "profile": {"real_name": real, "display_name": self.name},
        }


DEFAULT_USERS: tuple[User, ...] = (
    User("UOWNER0001", "olivia", "Olivia Owner", is_owner=True, is_admin=True),
    User("UADMIN0001", "adam", "Adam Admin", is_admin=True),
    User("UREVIEW001", "rita", "Rita Reviewer"),
    User("UGUEST0001", "gus", "Gus Guest"),
)
DEFAULT_CHANNELS: Mapping[str, str] = {"C0GENERAL1": "general", "C0QUEUE001": "queue"}


@dataclass
class View:
    """A published Home tab or an open modal."""

    id: str
    user_id: str
    body: Json
    hash: str
    previous_view_id: str | None = None


@dataclass
class Ephemeral:
    """A message only one user sees; not part of the channel's history."""

    channel: str
    user: str
    message: Json


@dataclass
class Workspace:
    """Everything the fake Slack remembers; all mutation goes through its methods."""

    team: Team = field(default_factory=Team)
    users: dict[str, User] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    clock: Clock = time.time
    trigger_ttl: float = TRIGGER_TTL_SECONDS
    dms: dict[str, str] = field(default_factory=dict)
    messages: dict[str, list[Json]] = field(default_factory=dict)
    ephemerals: list[Ephemeral] = field(default_factory=list)
    views: dict[str, View] = field(default_factory=dict)
    home: dict[str, str] = field(default_factory=dict)
    triggers: dict[str, tuple[float, str]] = field(default_factory=dict)
    _last_ts_micros: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def seeded(
        cls,
        *,
        users: Iterable[User] = DEFAULT_USERS,
        channels: Mapping[str, str] = DEFAULT_CHANNELS,
        team: Team | None = None,
        clock: Clock = time.time,
    ) -> Workspace:
        """A workspace with the given (or default) users and channels."""
        return cls(
            team=team or Team(),
            users={user.id: user for user in users},
            channels=dict(channels),
            clock=clock,
        )

    # -- identifiers ---------------------------------------------------------------------------
    def next_ts(self) -> str:
        """A message timestamp like "1700000000.000100": unique and strictly increasing."""
        micros = max(self._last_ts_micros + 1, int(self.clock() * 1_000_000))
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def new_id(self, prefix: str) -> str:
        """A fresh Slack-looking id such as "V000000007"."""
        return f"{prefix}{next(self._ids):09d}"

    def new_trigger_id(self, user_id: str) -> str:
        """A trigger id for `user_id`'s interaction, valid for views.open during `trigger_ttl` seconds."""
        trigger = f"{next(self._ids)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        self.triggers[trigger] = (self.clock(), user_id)
        return trigger

    def use_trigger(self, trigger_id: str) -> None:
        """Check a trigger id for views.open: `invalid_trigger_id` / `expired_trigger_id`."""
        issued = self.triggers.get(trigger_id)
        if issued is None:
            raise SlackError("invalid_trigger_id")
        if self.clock() - issued[0] > self.trigger_ttl:
            raise SlackError("expired_trigger_id")

    def trigger_user(self, trigger_id: str) -> str:
        """The user whose interaction issued this trigger id."""
        return self.triggers[trigger_id][1]

    # -- users and conversations ---------------------------------------------------------------
    def user(self, user_id: str) -> User:
        """A known user, or `user_not_found`."""
        found = self.users.get(user_id)
        if found is None:
            raise SlackError("user_not_found")
        return found

    def open_dm(self, user_ids: list[str]) -> str:
        """The stable DM ("D…") or group DM ("G…") channel id with these users."""
        for user_id in user_ids:
            self.user(user_id)
        if len(user_ids) == 1:
            channel = "D" + user_ids[0][1:]
        else:
            digest = hashlib.sha1(",".join(sorted(user_ids)).encode()).hexdigest()[:9].upper()
            channel = "G" + digest
        self.dms[channel] = ",".join(user_ids)
        self.messages.setdefault(channel, [])
        return channel

    def resolve_channel(self, channel: str) -> str:
        """A channel id, a "#name", an opened DM, or a user id (posting to a user uses the DM)."""
        if channel in self.channels or channel in self.dms:
            return channel
        name = channel.removeprefix("#")
        for channel_id, channel_name in self.channels.items():
            if channel_name == name:
                return channel_id
        if channel in self.users:
            return self.open_dm([channel])
        raise SlackError("channel_not_found")

    def channel_name(self, channel_id: str) -> str:
        """The name Slack shows in payloads: the channel's name, or "directmessage"."""
        return self.channels.get(channel_id, "directmessage")

    # -- messages ------------------------------------------------------------------------------
    def bot_message(self, text: str, blocks: list[Json] | None, ts: str) -> Json:
        """A message as the bot posts it."""
        message: Json = {
            "type": "message",
            "user": self.team.bot_user_id,
            "bot_id": self.team.bot_id,
            "app_id": self.team.app_id,
            "team": self.team.id,
            "text": text,
            "ts": ts,
        }
        if blocks is not None:
            message["blocks"] = with_ids(blocks)
        return message

    def post(self, channel: str, message: Json) -> Json:
        """Append a message to a channel's history."""
        self.messages.setdefault(channel, []).append(message)
        return message

    def find_message(self, channel: str, ts: str) -> Json:
        """The current message with this ts, or `message_not_found`."""
        for message in self.messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise SlackError("message_not_found")

    def delete_message(self, channel: str, ts: str) -> None:
        """Remove a message from its channel."""
        message = self.find_message(channel, ts)
        self.messages[channel].remove(message)

    def post_ephemeral(self, channel: str, user: str, message: Json) -> Ephemeral:
        """Record a message only `user` sees."""
        ephemeral = Ephemeral(channel, user, message)
        self.ephemerals.append(ephemeral)
        return ephemeral

    def find_ephemeral(self, channel: str, ts: str) -> Ephemeral | None:
        """An ephemeral message by its message_ts, if one was posted."""
        for ephemeral in self.ephemerals:
            if ephemeral.channel == channel and ephemeral.message["ts"] == ts:
                return ephemeral
        return None

    # -- views ---------------------------------------------------------------------------------
    def save_view(self, user_id: str, body: Json, view_id: str | None = None) -> View:
        """Store a view (new, or replacing `view_id`) and return it with a fresh hash."""
        view_hash = f"{int(self.clock())}.{secrets.token_hex(4)}"
        stored = {**copy.deepcopy(body), "blocks": with_ids(body.get("blocks") or [])}
        view = View(view_id or self.new_id("V"), user_id, stored, view_hash)
        self.views[view.id] = view
        if body.get("type") == "home":
            self.home[user_id] = view.id
        return view

    def view_json(self, view: View) -> Json:
        """The `view` object Slack returns and puts in payloads."""
        body = view.body
        return {
            "id": view.id,
            "team_id": self.team.id,
            "type": body.get("type"),
            "blocks": body.get("blocks", []),
            "private_metadata": body.get("private_metadata", ""),
            "callback_id": body.get("callback_id", ""),
            "external_id": body.get("external_id", ""),
            "title": body.get("title"),
            "submit": body.get("submit"),
            "close": body.get("close"),
            "state": {"values": {}},
            "hash": view.hash,
            "clear_on_close": bool(body.get("clear_on_close", False)),
            "notify_on_close": bool(body.get("notify_on_close", False)),
            "previous_view_id": view.previous_view_id,
            "root_view_id": view.id,
            "app_id": self.team.app_id,
            "app_installed_team_id": self.team.id,
            "bot_id": self.team.bot_id,
        }

    # -- keeping across restarts ---------------------------------------------------------------
    def saved_state(self) -> Json:
        """What a restarted sandbox needs to show the same conversations: DMs, messages and Home tabs.

        Ephemeral messages and open modals are left out: Slack's own clients lose them on reload too.
        """
        homes = {user: self.views[view_id] for user, view_id in self.home.items() if view_id in self.views}
        return {
            "last_ts_micros": self._last_ts_micros,
            "next_id": next(self._ids),  # uses one up: ids need only be unique
            "dms": dict(self.dms),
            "messages": copy.deepcopy(self.messages),
            "home": {user: {"id": v.id, "body": v.body, "hash": v.hash} for user, v in homes.items()},
        }

    def restore(self, state: Json) -> None:
        """Take back a `saved_state`, in a workspace where nothing has happened yet."""
        self._last_ts_micros = max(self._last_ts_micros, int(state.get("last_ts_micros", 0)))
        self._ids = itertools.count(int(state.get("next_id", 1)))
        self.dms.update({str(channel): str(members) for channel, members in state.get("dms", {}).items()})
        for channel, messages in state.get("messages", {}).items():
            self.messages[str(channel)] = [dict(message) for message in messages]
        for user, saved in state.get("home", {}).items():
            view = View(str(saved["id"]), str(user), dict(saved["body"]), str(saved["hash"]))
            self.views[view.id] = view
            self.home[view.user_id] = view.id
