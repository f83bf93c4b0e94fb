"""manifest.yml: a valid Slack app manifest that declares exactly what the bot serves and calls."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_PATH = REPO_ROOT / "manifest.yml"
SCHEMA_RELATIVE = Path("shared") / "slack" / "manifest.schema.json"

EVENTS_PATH = "/slack/events"  # the one endpoint `queuebot run` serves for Slack (a fixed name)
EXPECTED_BOT_SCOPES = {
    "commands",
    "chat:write",
    "chat:write.public",
    "im:write",
    "users:read",
    "channels:history",
    "groups:history",
    "im:history",
}
QUEUE_SUBCOMMANDS = ("add", "new", "list", "show", "cancel", "retry", "pause", "resume", "stats", "help")


def _schema_candidates() -> list[Path]:
    """shared/ sits beside the checkout: /work/shared next to /work/main, or `<clone>/../shared` in CI.

    Both the symlink-resolved and the literal location of this file are tried (a clone reached through a
    symlink has a different parent), then the parent of the working directory (CI runs from the clone).
    """
    here = Path(__file__)
    roots = [here.resolve().parents[1], here.absolute().parents[1], Path.cwd()]
    candidates: list[Path] = []
    for root in roots:
        candidate = root.parent / SCHEMA_RELATIVE
        if candidate not in candidates:
            candidates.append(candidate)
    return candidates


def _find_schema() -> Path | None:
    return next((path for path in _schema_candidates() if path.is_file()), None)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "manifest.yml must be a YAML mapping"
    return loaded


@pytest.fixture(scope="module")
def validator() -> Any:
    schema_path = _find_schema()
    if schema_path is None:
        tried = ", ".join(str(path) for path in _schema_candidates())
        pytest.skip(f"Slack manifest schema not found (looked for {tried}); cannot validate manifest.yml")
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    # The validator class the schema's own $schema names (draft-07 today).
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _errors(validator: Any, instance: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def _queue_command(manifest: dict[str, Any]) -> dict[str, Any]:
    commands = manifest.get("features", {}).get("slash_commands", [])
    matches = [command for command in commands if command.get("command") == "/queue"]
    assert len(matches) == 1, f"expected exactly one /queue command, found {commands!r}"
    command: dict[str, Any] = matches[0]
    return command


def test_manifest_validates_against_slack_schema(manifest: dict[str, Any], validator: Any) -> None:
    assert _errors(validator, manifest) == []


def _add_unknown_top_level_key(broken: dict[str, Any]) -> None:
    broken["permissions"] = {"bot": ["chat:write"]}


def _make_always_online_a_string(broken: dict[str, Any]) -> None:
    broken["features"]["bot_user"]["always_online"] = "yes"


def _drop_slash_from_command(broken: dict[str, Any]) -> None:
    broken["features"]["slash_commands"][0]["command"] = "queue"


def _make_scopes_a_string(broken: dict[str, Any]) -> None:
    broken["oauth_config"]["scopes"]["bot"] = "commands,chat:write"


def _drop_app_name(broken: dict[str, Any]) -> None:
    del broken["display_information"]["name"]


def _use_non_http_request_url(broken: dict[str, Any]) -> None:
    broken["settings"]["interactivity"]["request_url"] = "queuebot.example.com/slack/events"


@pytest.mark.parametrize(
    "breakage",
    [
        _add_unknown_top_level_key,
        _make_always_online_a_string,
        _drop_slash_from_command,
        _make_scopes_a_string,
        _drop_app_name,
        _use_non_http_request_url,
    ],
    ids=lambda breakage: breakage.__name__.lstrip("_"),
)
def test_schema_validation_rejects_broken_manifest(
    manifest: dict[str, Any], validator: Any, breakage: Callable[[dict[str, Any]], None]
) -> None:
    broken = copy.deepcopy(manifest)
    breakage(broken)
    assert _errors(validator, broken), f"the schema accepted a manifest broken by {breakage.__name__}"


def test_background_color_is_hex(manifest: dict[str, Any]) -> None:
    # The schema spells this constraint `regex`, which JSON Schema ignores, so check it here.
    color = manifest["display_information"].get("background_color")
    assert color is None or re.fullmatch(r"#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?", color), color


def test_queue_command_has_usage_hint_naming_every_subcommand(manifest: dict[str, Any]) -> None:
    command = _queue_command(manifest)
    hint = command.get("usage_hint", "")
    assert hint.strip(), "/queue needs a usage hint"
    words = set(re.findall(r"[a-z]+", hint))
    missing = [name for name in QUEUE_SUBCOMMANDS if name not in words]
    assert missing == [], f"usage hint does not mention {missing}"
    assert command.get("description", "").strip()


def test_every_url_is_the_same_slack_events_endpoint(manifest: dict[str, Any]) -> None:
    urls = [value for value in _strings(manifest) if re.match(r"https?://", value)]
    # The slash command, events and interactivity all need their URL (unless Socket Mode).
    assert len(urls) >= 3, urls
    parsed = [urlsplit(url) for url in urls]
    assert {part.path for part in parsed} == {EVENTS_PATH}, urls
    assert len({(part.scheme, part.netloc) for part in parsed}) == 1, f"URLs point at different hosts: {urls}"
    assert all(part.scheme == "https" for part in parsed), "Slack only delivers to https request URLs"
    assert _queue_command(manifest).get("url") in urls
    assert manifest["settings"]["event_subscriptions"].get("request_url") in urls
    assert manifest["settings"]["interactivity"].get("request_url") in urls


def test_bot_scopes_are_exactly_those_used(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]
    bot = scopes.get("bot", [])
    assert len(bot) == len(set(bot)), f"duplicate scopes: {bot}"
    assert set(bot) == EXPECTED_BOT_SCOPES
    assert set(scopes) == {"bot"}, "no user or optional scopes: the bot acts only as itself"


def test_home_tab_enabled_and_app_home_opened_subscribed(manifest: dict[str, Any]) -> None:
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in manifest["settings"]["event_subscriptions"].get("bot_events", [])


def test_interactivity_enabled(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_bot_user_and_http_mode(manifest: dict[str, Any]) -> None:
    bot_user = manifest["features"]["bot_user"]
    assert bot_user["display_name"] == "queuebot"
    assert bot_user.get("always_online") is True
    # Shipped for HTTP request URLs; Socket Mode is opted into by editing the manifest.
    assert manifest["settings"]["socket_mode_enabled"] is False
