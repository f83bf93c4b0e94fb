"""Slack's Block Kit limits, checked the way Slack checks them: errors carry a JSON pointer.

`message_block_errors` covers chat.* (`invalid_blocks`), `view_errors` covers views.* (`invalid_arguments`).
An empty list means Slack would accept the blocks. Messages read like Slack's, e.g.
"must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

Surface = Literal["message", "modal", "home"]

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ID = 255
MAX_SELECT_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_PLACEHOLDER = 150
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3000
MAX_LABEL = 2000
MAX_MARKDOWN_TEXT = 12000
MAX_CHOICE_OPTIONS = 10
MAX_OVERFLOW_OPTIONS = 5

MESSAGE_BLOCKS = frozenset(
    {"section", "divider", "image", "actions", "context", "header", "rich_text", "video", "file", "markdown"}
)
VIEW_BLOCKS = frozenset(
    {"section", "divider", "image", "actions", "context", "header", "input", "rich_text", "video"}
)
SELECTS = frozenset(
    {
        f"{multi}{kind}_select"
        for multi in ("", "multi_")
        for kind in ("static", "external", "users", "conversations", "channels")
    }
)
ACTIONS_ELEMENTS = SELECTS | {
    "button",
    "checkboxes",
    "datepicker",
    "datetimepicker",
    "overflow",
    "radio_buttons",
    "timepicker",
    "plain_text_input",
    "rich_text_input",
}
ACCESSORY_ELEMENTS = SELECTS | {
    "button",
    "checkboxes",
    "datepicker",
    "image",
    "overflow",
    "radio_buttons",
    "timepicker",
}
INPUT_ELEMENTS = SELECTS | {
    "checkboxes",
    "datepicker",
    "datetimepicker",
    "radio_buttons",
    "timepicker",
    "plain_text_input",
    "rich_text_input",
    "number_input",
    "email_text_input",
    "url_text_input",
    "file_input",
}


class Check:
    """Collects errors while walking a block tree; each error names the JSON pointer it is about."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str, path: str) -> None:
        """Record one error."""
        self.errors.append(f"{message} [json-pointer:{path}]")

    def string(
        self, obj: Mapping[str, Any], key: str, limit: int, path: str, *, required: bool = False
    ) -> None:
        """A string field of at most `limit` characters."""
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(f"missing required field: {key}", path)
            return
        if not isinstance(value, str):
            self.fail("must be a string", f"{path}/{key}")
        elif len(value) > limit:
            self.fail(f"must be less than {limit + 1} characters", f"{path}/{key}")

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        limit: int,
        path: str,
        *,
        required: bool = False,
        plain: bool = False,
    ) -> None:
        """A text object (`plain_text` or `mrkdwn`) whose text has 1..limit characters."""
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(f"missing required field: {key}", path)
            return
        self.text_object(value, limit, f"{path}/{key}", plain=plain)

    def text_object(self, value: Any, limit: int, path: str, *, plain: bool = False) -> None:
        """A text object found at `path` (e.g. one of a section's fields)."""
        if not isinstance(value, Mapping):
            self.fail("must be a text object", path)
            return
        kinds = ("plain_text",) if plain else ("plain_text", "mrkdwn")
        if value.get("type") not in kinds:
            self.fail(f"must be one of {', '.join(kinds)}", f"{path}/type")
        text = value.get("text")
        if not isinstance(text, str) or not text:
            self.fail("must be more than 0 characters", f"{path}/text")
        elif len(text) > limit:
            self.fail(f"must be less than {limit + 1} characters", f"{path}/text")

    def items(
        self, obj: Mapping[str, Any], key: str, limit: int, path: str, *, required: bool = False
    ) -> list[Any]:
        """A list field of 1..limit items; returns the items to walk on."""
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(f"missing required field: {key}", path)
            return []
        if not isinstance(value, list):
            self.fail("must be an array", f"{path}/{key}")
            return []
        if not value:
            self.fail("must provide at least 1 item", f"{path}/{key}")
        elif len(value) > limit:
            self.fail(f"must be less than {limit + 1} items", f"{path}/{key}")
        return value

    def one_of(self, obj: Mapping[str, Any], key: str, allowed: frozenset[str], path: str) -> None:
        """An optional enumerated string field."""
        value = obj.get(key)
        if value is not None and value not in allowed:
            self.fail(f"must be one of {', '.join(sorted(allowed))}", f"{path}/{key}")


# -- composition objects -------------------------------------------------------------------------
def _confirm(check: Check, element: Mapping[str, Any], path: str) -> None:
    confirm = element.get("confirm")
    if confirm is None:
        return
    here = f"{path}/confirm"
    if not isinstance(confirm, Mapping):
        check.fail("must be an object", here)
        return
    check.text(confirm, "title", MAX_CONFIRM_TITLE, here, required=True, plain=True)
    check.text(confirm, "text", MAX_CONFIRM_TEXT, here, required=True)
    check.text(confirm, "confirm", MAX_CONFIRM_BUTTON, here, required=True, plain=True)
    check.text(confirm, "deny", MAX_CONFIRM_BUTTON, here, required=True, plain=True)
    check.one_of(confirm, "style", frozenset({"primary", "danger"}), here)


def _options(check: Check, options: list[Any], path: str, *, plain: bool) -> None:
    for index, option in enumerate(options):
        here = f"{path}/{index}"
        if not isinstance(option, Mapping):
            check.fail("must be an object", here)
            continue
        check.text(option, "text", MAX_OPTION_TEXT, here, required=True, plain=plain)
        check.string(option, "value", MAX_OPTION_VALUE, here, required=True)
        check.text(option, "description", MAX_OPTION_TEXT, here, plain=plain)
        check.string(option, "url", MAX_URL, here)


# -- elements ------------------------------------------------------------------------------------
def _button(check: Check, element: Mapping[str, Any], path: str) -> None:
    check.text(element, "text", MAX_BUTTON_TEXT, path, required=True, plain=True)
    check.string(element, "value", MAX_BUTTON_VALUE, path)
    check.string(element, "url", MAX_URL, path)
    check.string(element, "accessibility_label", MAX_BUTTON_TEXT, path)
    check.one_of(element, "style", frozenset({"primary", "danger"}), path)


def _select(check: Check, element: Mapping[str, Any], path: str) -> None:
    check.text(element, "placeholder", MAX_PLACEHOLDER, path, plain=True)
    if element.get("type", "").removeprefix("multi_") != "static_select":
        return
    has_options, has_groups = "options" in element, "option_groups" in element
    if has_options == has_groups:
        check.fail("must provide exactly one of options, option_groups", path)
    options = check.items(element, "options", MAX_SELECT_OPTIONS, path)
    _options(check, options, f"{path}/options", plain=True)
    groups = check.items(element, "option_groups", MAX_SELECT_OPTIONS, path)
    for index, group in enumerate(groups):
        here = f"{path}/option_groups/{index}"
        if isinstance(group, Mapping):
            check.text(group, "label", MAX_OPTION_TEXT, here, required=True, plain=True)
            grouped = check.items(group, "options", MAX_SELECT_OPTIONS, here, required=True)
            _options(check, grouped, f"{here}/options", plain=True)


def _choices(check: Check, element: Mapping[str, Any], path: str) -> None:
    limit = MAX_OVERFLOW_OPTIONS if element.get("type") == "overflow" else MAX_CHOICE_OPTIONS
    options = check.items(element, "options", limit, path, required=True)
    _options(check, options, f"{path}/options", plain=element.get("type") == "overflow")


def _text_input(check: Check, element: Mapping[str, Any], path: str) -> None:
    check.text(element, "placeholder", MAX_PLACEHOLDER, path, plain=True)
    for key in ("min_length", "max_length"):
        value = element.get(key)
        if value is not None and (not isinstance(value, int) or not 0 <= value <= MAX_SECTION_TEXT):
            check.fail(f"must be an integer between 0 and {MAX_SECTION_TEXT}", f"{path}/{key}")


def _image(check: Check, element: Mapping[str, Any], path: str) -> None:
    if "image_url" not in element and "slack_file" not in element:
        check.fail("must provide one of image_url, slack_file", path)
    check.string(element, "image_url", MAX_URL, path)
    check.string(element, "alt_text", MAX_LABEL, path, required=True)


def _placeholder_only(check: Check, element: Mapping[str, Any], path: str) -> None:
    check.text(element, "placeholder", MAX_PLACEHOLDER, path, plain=True)


ElementRule = Callable[[Check, Mapping[str, Any], str], None]
ELEMENT_RULES: dict[str, ElementRule] = {
    "button": _button,
    "overflow": _choices,
    "checkboxes": _choices,
    "radio_buttons": _choices,
    "plain_text_input": _text_input,
    "image": _image,
    **{select: _select for select in SELECTS},
    **{
        kind: _placeholder_only
        for kind in (
            "datepicker",
            "timepicker",
            "datetimepicker",
            "number_input",
            "email_text_input",
            "url_text_input",
            "rich_text_input",
            "file_input",
        )
    },
}


def _element(check: Check, element: Any, path: str, allowed: frozenset[str], action_ids: set[str]) -> None:
    if not isinstance(element, Mapping):
        check.fail("must be an object", path)
        return
    kind = element.get("type")
    if kind not in allowed:
        check.fail(f"unsupported type: {kind}", f"{path}/type")
        return
    check.string(element, "action_id", MAX_ID, path)
    action_id = element.get("action_id")
    if isinstance(action_id, str):
        if action_id in action_ids:
            check.fail(f"duplicate action_id: {action_id}", f"{path}/action_id")
        action_ids.add(action_id)
    _confirm(check, element, path)
    ELEMENT_RULES[kind](check, element, path)


# -- blocks --------------------------------------------------------------------------------------
def _section(check: Check, block: Mapping[str, Any], path: str) -> None:
    if "text" not in block and "fields" not in block:
        check.fail("must provide one of text, fields", path)
    check.text(block, "text", MAX_SECTION_TEXT, path)
    fields = check.items(block, "fields", MAX_SECTION_FIELDS, path)
    for index, field in enumerate(fields):
        check.text_object(field, MAX_FIELD_TEXT, f"{path}/fields/{index}")
    if "accessory" in block:
        _element(check, block["accessory"], f"{path}/accessory", ACCESSORY_ELEMENTS, set())


def _header(check: Check, block: Mapping[str, Any], path: str) -> None:
    check.text(block, "text", MAX_HEADER_TEXT, path, required=True, plain=True)


def _actions(check: Check, block: Mapping[str, Any], path: str) -> None:
    elements = check.items(block, "elements", MAX_ACTIONS_ELEMENTS, path, required=True)
    action_ids: set[str] = set()
    for index, element in enumerate(elements):
        _element(check, element, f"{path}/elements/{index}", ACTIONS_ELEMENTS, action_ids)


def _context(check: Check, block: Mapping[str, Any], path: str) -> None:
    elements = check.items(block, "elements", MAX_CONTEXT_ELEMENTS, path, required=True)
    for index, element in enumerate(elements):
        here = f"{path}/elements/{index}"
        if isinstance(element, Mapping) and element.get("type") == "image":
            _image(check, element, here)
        else:
            check.text_object(element, MAX_SECTION_TEXT, here)


def _image_block(check: Check, block: Mapping[str, Any], path: str) -> None:
    _image(check, block, path)
    check.text(block, "title", MAX_LABEL, path, plain=True)


def _input(check: Check, block: Mapping[str, Any], path: str) -> None:
    check.text(block, "label", MAX_LABEL, path, required=True, plain=True)
    check.text(block, "hint", MAX_LABEL, path, plain=True)
    if "element" not in block:
        check.fail("missing required field: element", path)
    else:
        _element(check, block["element"], f"{path}/element", INPUT_ELEMENTS, set())


def _markdown(check: Check, block: Mapping[str, Any], path: str) -> None:
    check.string(block, "text", MAX_MARKDOWN_TEXT, path, required=True)


def _loose(check: Check, block: Mapping[str, Any], path: str) -> None:
    """Blocks the bot does not build (rich_text, video, file, divider): only their common fields."""


BLOCK_RULES: dict[str, ElementRule] = {
    "section": _section,
    "header": _header,
    "actions": _actions,
    "context": _context,
    "image": _image_block,
    "input": _input,
    "markdown": _markdown,
    "divider": _loose,
    "rich_text": _loose,
    "video": _loose,
    "file": _loose,
}


def _blocks(check: Check, blocks: Any, path: str, surface: Surface) -> None:
    if not isinstance(blocks, list):
        check.fail("must be an array", path)
        return
    limit = MAX_MESSAGE_BLOCKS if surface == "message" else MAX_VIEW_BLOCKS
    if len(blocks) > limit:
        check.fail(f"must be less than {limit + 1} items", path)
    allowed = MESSAGE_BLOCKS if surface == "message" else VIEW_BLOCKS
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        here = f"{path}/{index}"
        if not isinstance(block, Mapping):
            check.fail("must be an object", here)
            continue
        kind = block.get("type")
        if kind not in allowed:
            check.fail(f"unsupported type: {kind}", f"{here}/type")
            continue
        check.string(block, "block_id", MAX_ID, here)
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                check.fail(f"duplicate block_id: {block_id}", f"{here}/block_id")
            block_ids.add(block_id)
        BLOCK_RULES[kind](check, block, here)


def message_block_errors(blocks: Any) -> list[str]:
    """Why Slack would refuse these message blocks (chat.postMessage, chat.update, response_url)."""
    check = Check()
    _blocks(check, blocks, "/blocks", "message")
    return check.errors


def view_errors(view: Any, expected_type: Literal["modal", "home"] | None = None) -> list[str]:
    """Why Slack would refuse this view (views.open / views.update / views.publish)."""
    check = Check()
    if not isinstance(view, Mapping):
        check.fail("must be an object", "/view")
        return check.errors
    kind = view.get("type")
    if kind not in ("modal", "home") or (expected_type is not None and kind != expected_type):
        check.fail(f"must be {expected_type or 'modal or home'}", "/view/type")
        return check.errors
    if kind == "modal":
        check.text(view, "title", MAX_VIEW_TITLE, "/view", required=True, plain=True)
        check.text(view, "submit", MAX_VIEW_TITLE, "/view", plain=True)
        check.text(view, "close", MAX_VIEW_TITLE, "/view", plain=True)
        has_input = any(isinstance(b, Mapping) and b.get("type") == "input" for b in view.get("blocks") or [])
        if has_input and "submit" not in view:
            check.fail("must provide submit when blocks contain an input", "/view")
    check.string(view, "private_metadata", MAX_PRIVATE_METADATA, "/view")
    check.string(view, "callback_id", MAX_ID, "/view")
    check.string(view, "external_id", MAX_ID, "/view")
    if "blocks" not in view:
        check.fail("missing required field: blocks", "/view")
    else:
        _blocks(check, view["blocks"], "/view/blocks", kind)
    return check.errors
