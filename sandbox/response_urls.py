"""`response_url`s: handed out with commands and clicks, each good for 5 posts within 30 minutes.

Answers follow Slack's webhook style: HTTP 200 with body "ok", or a 4xx with the error as plain text.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field

from sandbox.block_kit_rules import message_block_errors
from sandbox.web_api import MAX_MESSAGE_TEXT
from sandbox.workspace import Json, SlackError, Workspace, with_ids

MAX_USES = 5
TTL_SECONDS = 30 * 60


@dataclass
class ResponsePost:
    """One post to a response URL, accepted or not."""

    time: float
    body: Json
    status: int
    error: str | None = None


@dataclass
class ResponseUrl:
    """Where an interaction may be answered: its channel, its user and, for a click, the original message."""

    id: str
    channel: str
    user: str
    message_ts: str | None
    issued: float
    posts: list[ResponsePost] = field(default_factory=list)

    @property
    def accepted(self) -> list[ResponsePost]:
        """The posts Slack accepted."""
        return [post for post in self.posts if post.error is None]


class ResponseUrls:
    """Issues response URLs and applies what the app posts to them."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.by_id: dict[str, ResponseUrl] = {}

    def issue(self, channel: str, user: str, message_ts: str | None = None) -> ResponseUrl:
        """A new response URL for an interaction in `channel` by `user` (on message `message_ts`)."""
        url = ResponseUrl(secrets.token_hex(12), channel, user, message_ts, self.workspace.clock())
        self.by_id[url.id] = url
        return url

    def post(self, url_id: str, body: object) -> ResponsePost:
        """Apply one post; raises SlackError (status 4xx) when Slack would refuse it."""
        url = self.by_id.get(url_id)
        if url is None:
            raise SlackError("no_service", status=404)
        now = self.workspace.clock()
        used = len(url.accepted)
        post = ResponsePost(now, body if isinstance(body, dict) else {"raw": body}, 200)
        url.posts.append(post)
        try:
            if now - url.issued > TTL_SECONDS:
                raise SlackError("expired_url", status=404)
            if used >= MAX_USES:
                raise SlackError("used_url", status=404)
            if not isinstance(body, dict):
                raise SlackError("invalid_payload", status=400)
            self._apply(url, body)
        except SlackError as error:
            post.status, post.error = error.status, error.code
            raise
        return post

    def _apply(self, url: ResponseUrl, body: Json) -> None:
        ws = self.workspace
        if body.get("delete_original"):
            self._delete_original(url)
            return
        text, blocks = _content(body)
        original = ws.find_ephemeral(url.channel, url.message_ts) if url.message_ts else None
        if body.get("replace_original") and url.message_ts:
            if original is not None:
                original.message.update(text=text, blocks=with_ids(blocks or []))
            else:
                message = ws.find_message(url.channel, url.message_ts)
                message.update(
                    text=text,
                    blocks=with_ids(blocks or []),
                    edited={"user": ws.team.bot_user_id, "ts": ws.next_ts()},
                )
            return
        message = ws.bot_message(text, blocks, ws.next_ts())
        if body.get("response_type") == "in_channel":
            ws.post(url.channel, message)
        else:
            ws.post_ephemeral(url.channel, url.user, copy.deepcopy(message))

    def _delete_original(self, url: ResponseUrl) -> None:
        ws = self.workspace
        if url.message_ts is None:
            return
        ephemeral = ws.find_ephemeral(url.channel, url.message_ts)
        if ephemeral is not None:
            ws.ephemerals.remove(ephemeral)
        else:
            ws.delete_message(url.channel, url.message_ts)


def _content(body: Json) -> tuple[str, list[Json] | None]:
    blocks = body.get("blocks")
    if blocks is not None and (not isinstance(blocks, list) or message_block_errors(blocks)):
        raise SlackError("invalid_blocks", status=400)
    text = body.get("text")
    if not isinstance(text, str | None):
        raise SlackError("invalid_payload", status=400)
    if not text and not blocks:
        raise SlackError("no_text", status=400)
    if text is not None and len(text) > MAX_MESSAGE_TEXT:
        raise SlackError("msg_too_long", status=400)
    return text or "", blocks
