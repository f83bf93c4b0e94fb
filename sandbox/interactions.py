"""What a person does in the sandbox workspace, delivered to the app as Slack delivers it, and the app's
answers applied as Slack applies them.

Slack waits 3 seconds for the app to acknowledge. A slash command or a click that gets no 2xx in time
shows the person an error (`operation_timeout`, or `dispatch_failed` when the app cannot be reached or
answers with an error) and is not sent again; an event is resent up to 3 times with `X-Slack-Retry-Num`
and `X-Slack-Retry-Reason`. A command's acknowledgement becomes a message only the person sees (or one
in the channel with `response_type: in_channel`); a modal submission's `response_action` shows field
errors, updates, pushes or clears views, and an empty one closes the modal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sandbox.block_kit_rules import view_errors
from sandbox.fake_slack import FakeSlack
from sandbox.signed_requests import Delivery, SignedRequests, SlackRequest
from sandbox.workspace import Json, SlackError, View

#: How long Slack waits for an acknowledgement.
ACK_TIMEOUT_S = 3.0
#: Slack resends an unacknowledged event nearly at once, after 1 minute and after 5 minutes.
EVENT_RETRY_DELAYS_S: tuple[float, ...] = (0.0, 60.0, 300.0)
#: The only slash command the sandbox's app registers (manifest.yml).
COMMAND = "/queue"
#: Slack's own bot, which tells people about failed commands.
SLACKBOT = "USLACKBOT"


@dataclass(frozen=True)
class Outcome:
    """What the person is shown of one delivery."""

    ok: bool
    #: Slack's word for a delivery that failed, e.g. "operation_timeout"
    error: str | None = None
    #: field errors of a modal submission (`response_action: errors`), by block_id
    errors: Mapping[str, str] = field(default_factory=dict)
    #: whether a submitted modal closed
    closed: bool = False

    def to_json(self) -> Json:
        """The page's view of it."""
        return {"ok": self.ok, "error": self.error, "errors": dict(self.errors), "closed": self.closed}


def slack_escaped(text: str) -> str:
    """Text as Slack stores what a person typed: `&`, `<` and `>` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Interactions:
    """People's commands, clicks, modal submissions and Home tab visits, sent to the app at `bot_url`."""

    def __init__(
        self,
        fake: FakeSlack,
        bot_url: str,
        *,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        event_retry_delays_s: Sequence[float] = EVENT_RETRY_DELAYS_S,
    ) -> None:
        self.fake = fake
        self.ws = fake.workspace
        self.slack = SignedRequests(fake, bot_url)
        self.ack_timeout_s = ack_timeout_s
        self.event_retry_delays_s = tuple(event_retry_delays_s)
        #: modals the person closed, or that a submission closed
        self.closed_views: set[str] = set()
        #: the field errors a modal's last submission got back, by view id
        self.view_errors: dict[str, dict[str, str]] = {}
        #: the command each ephemeral reply answers, by the reply's ts (shown above it on the page)
        self.typed: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        """Stop resending events and close the HTTP session."""
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.slack.close()

    # -- what the page shows ---------------------------------------------------------------------
    def open_modals(self, user: str) -> list[View]:
        """The person's open modals, oldest first (the last one is on top)."""
        return sorted(
            (
                view
                for view in self.ws.views.values()
                if view.user_id == user
                and view.body.get("type") == "modal"
                and view.id not in self.closed_views
            ),
            key=lambda view: view.id,
        )

    # -- what people do --------------------------------------------------------------------------
    async def message(self, user: str, channel: str, text: str) -> Outcome:
        """Something typed in the message box: a slash command, or else a plain message in the channel."""
        who = self.ws.user(user)
        channel = self.ws.resolve_channel(channel)
        if not text.strip():
            return Outcome(ok=False, error="no_text")
        if not text.startswith("/"):
            typed = {"type": "message", "user": who.id, "text": slack_escaped(text), "ts": self.ws.next_ts()}
            self.ws.post(channel, typed)
            await self.fake.changed()
            return Outcome(ok=True)
        command, _, rest = text.strip().partition(" ")
        if command != COMMAND:
            hint = f"`{command}` is not a valid command. In this workspace, try `{COMMAND} help`."
            await self._slackbot_says(channel, who.id, hint)
            return Outcome(ok=False, error="invalid_command")
        request = self.slack.slash_command(who.id, rest.strip(), channel=channel, command=command)
        answer, error = await self._send(request)
        if answer is None:
            await self._slackbot_says(channel, who.id, f'`{command}` failed with the error "{error}"')
            return Outcome(ok=False, error=error)
        self._show_reply(channel, who.id, answer, typed=text.strip())
        await self.fake.changed()
        return Outcome(ok=True)

    async def click(
        self,
        user: str,
        action_id: str,
        *,
        value: str | None = None,
        channel: str | None = None,
        message_ts: str | None = None,
        view_id: str | None = None,
    ) -> Outcome:
        """A click on a button (or a choice in a menu) in a message, the Home tab or a modal."""
        request = self.slack.block_actions(
            user, action_id, channel=channel, message_ts=message_ts, view_id=view_id, value=value
        )
        answer, error = await self._send(request)
        return Outcome(ok=answer is not None, error=error)

    async def submit(self, user: str, view_id: str, values: Mapping[str, Mapping[str, Any]]) -> Outcome:
        """Submitting a modal with its inputs, `values[block_id][action_id]`."""
        view = self._open_modal(user, view_id)
        answer, error = await self._send(self.slack.view_submission(user, view.id, values))
        if answer is None:
            return Outcome(ok=False, error=error)
        outcome = self._apply_submission(view, _json_body(answer))
        await self.fake.changed()
        return outcome

    async def close_view(self, user: str, view_id: str) -> None:
        """The person closes a modal (its Cancel or close button)."""
        self._open_modal(user, view_id)
        self.closed_views.add(view_id)
        self.view_errors.pop(view_id, None)
        await self.fake.changed()

    async def dismiss(self, user: str, channel: str, ts: str) -> None:
        """The person dismisses a message only they could see."""
        ephemeral = self.ws.find_ephemeral(self.ws.resolve_channel(channel), ts)
        if ephemeral is not None and ephemeral.user == user:
            self.ws.ephemerals.remove(ephemeral)
            self.typed.pop(ts, None)
            await self.fake.changed()

    def open_app(self, user: str, tab: str = "home") -> None:
        """The person opens the app's Home (or Messages) tab: `app_home_opened`, resent as Slack resends
        events. Returns at once; what the app publishes reaches the page as a change."""
        if tab not in ("home", "messages"):
            raise SlackError("invalid_tab")
        request = self.slack.app_home_opened(self.ws.user(user).id, tab=tab)
        self._spawn(
            self.slack.deliver(
                request, ack_timeout=self.ack_timeout_s, retry_delays=self.event_retry_delays_s
            )
        )

    # -- delivery --------------------------------------------------------------------------------
    async def _send(self, request: SlackRequest) -> tuple[Delivery | None, str | None]:
        """One delivery, as Slack makes it for a command or an interaction: the app's answer, or the error
        the person is shown."""
        try:
            answer = await self.slack.send(request, timeout=self.ack_timeout_s)
        except TimeoutError:
            return None, "operation_timeout"
        except aiohttp.ClientError:
            return None, "dispatch_failed"
        if not 200 <= answer.status < 300:
            return None, "dispatch_failed"
        return answer, None

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- answers ---------------------------------------------------------------------------------
    def _show_reply(self, channel: str, user: str, answer: Delivery, *, typed: str) -> None:
        """A command's acknowledgement, shown as Slack shows it (nothing, when the ack is empty)."""
        body = _json_body(answer)
        if not body and answer.text.strip() and not answer.text.lstrip().startswith("{"):
            body = {"text": answer.text}  # Slack also takes a plain-text reply
        text, blocks = body.get("text"), body.get("blocks")
        if not text and not blocks:
            return
        message = self.ws.bot_message(
            str(text or ""), blocks if isinstance(blocks, list) else None, self.ws.next_ts()
        )
        if body.get("response_type") == "in_channel":
            self.ws.post(channel, message)
        else:
            self.ws.post_ephemeral(channel, user, message)
            self.typed[message["ts"]] = typed

    def _apply_submission(self, view: View, body: Json) -> Outcome:
        action = body.get("response_action")
        self.view_errors.pop(view.id, None)
        if action == "errors":
            errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
            self.view_errors[view.id] = errors
            return Outcome(ok=True, errors=errors)
        if action in ("update", "push"):
            new_view = body.get("view")
            problems = view_errors(new_view, "modal")
            if problems or not isinstance(new_view, dict):  # Slack refuses it and the modal stays
                return Outcome(ok=False, error="invalid response_action view: " + "; ".join(problems))
            self.ws.save_view(view.user_id, new_view, view.id if action == "update" else None)
            return Outcome(ok=True)
        if action == "clear":
            self.closed_views.update(modal.id for modal in self.open_modals(view.user_id))
        else:
            self.closed_views.add(view.id)
        return Outcome(ok=True, closed=True)

    def _open_modal(self, user: str, view_id: str) -> View:
        view = self.ws.views.get(view_id)
        if view is None or view.user_id != user or view.id in self.closed_views:
            raise SlackError("view_not_found")
        return view

    async def _slackbot_says(self, channel: str, user: str, text: str) -> None:
        message = {"type": "message", "user": SLACKBOT, "text": text, "ts": self.ws.next_ts()}
        self.ws.post_ephemeral(channel, user, message)
        await self.fake.changed()


def _json_body(answer: Delivery) -> Json:
    """The acknowledgement's JSON object, or {} when it carries none."""
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
