"""Slack's Block Kit limits for messages, as the Slack stand-in enforces them.

``check_message(message)`` returns ``None`` for a message Slack would take, or the error Slack
answers (HTTP 400) for one it refuses: ``invalid_blocks_format`` when ``blocks`` is not a list
of objects, ``invalid_blocks`` for a block over Slack's limits or malformed. The limits are
Slack's documented ones (Block Kit reference; the same numbers as slack_sdk's model validators):

* at most 50 blocks a message; ``block_id`` at most 255 characters and unique in the message;
* every text object: ``type`` ``plain_text`` or ``mrkdwn``, a ``text`` of 1 to 3,000 characters;
  ``emoji`` only on plain_text, ``verbatim`` only on mrkdwn;
* section: ``text`` and/or 1 to 10 ``fields`` of at most 2,000 characters each;
* header: plain_text of at most 150 characters;
* context: 1 to 10 elements; actions: 1 to 25 elements;
* button: text (plain_text) at most 75, ``value`` 2,000, ``url`` 3,000, ``action_id`` 255;
  confirm dialog: title 100, text 300, confirm and deny 30;
* input: a plain_text ``label`` and ``hint`` of at most 2,000, an ``element``; placeholder 150.

Other block types Slack knows (divider, image, rich_text, ...) pass unchecked; unknown types are
refused. Slack cuts a top-level ``text`` over 40,000 characters rather than refusing it, and so
does not the stand-in.
"""

from __future__ import annotations

from typing import Any

MAX_BLOCKS = 50
BLOCK_ID = 255
ACTION_ID = 255
TEXT_OBJECT = 3000
SECTION_TEXT = 3000
FIELD_TEXT = 2000
MAX_FIELDS = 10
HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
BUTTON_URL = 3000
CONFIRM_LIMITS = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
INPUT_LABEL = 2000
PLACEHOLDER = 150
UNCHECKED_TYPES = frozenset({"divider", "image", "rich_text", "video", "file", "markdown"})


class Refused(Exception):
    """A message Slack refuses; ``error`` is the body Slack answers."""

    def __init__(self, error: str, why: str) -> None:
        super().__init__(f"{error}: {why}")
        self.error = error
        self.why = why


def check_message(message: dict[str, Any]) -> Refused | None:
    """``None`` if Slack takes ``message``, else why it refuses it (see the module docstring)."""
    try:
        _check_blocks(message.get("blocks"))
    except Refused as refused:
        return refused
    return None


def _check_blocks(blocks: Any) -> None:
    if blocks is None:
        return
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise Refused("invalid_blocks_format", "blocks must be a list of objects")
    if len(blocks) > MAX_BLOCKS:
        raise Refused("invalid_blocks", f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        block_id = block.get("block_id")
        if block_id is not None:
            _string(block_id, BLOCK_ID, f"{where}/block_id")
            if block_id in seen:
                raise Refused("invalid_blocks", f"duplicate block_id {block_id!r} [json-pointer:{where}/block_id]")
            seen.add(block_id)
        _check_block(block, where)


def _check_block(block: dict[str, Any], where: str) -> None:
    kind = block.get("type")
    if kind == "section":
        if block.get("text") is None and block.get("fields") is None:
            raise Refused("invalid_blocks", f"section needs text or fields [json-pointer:{where}]")
        if block.get("text") is not None:
            _text(block["text"], SECTION_TEXT, f"{where}/text")
        if block.get("fields") is not None:
            fields = _list(block["fields"], MAX_FIELDS, f"{where}/fields")
            for i, item in enumerate(fields):
                _text(item, FIELD_TEXT, f"{where}/fields/{i}")
        _check_elements([block["accessory"]] if "accessory" in block else [], f"{where}/accessory")
    elif kind == "header":
        _text(block.get("text"), HEADER_TEXT, f"{where}/text", plain_only=True)
    elif kind == "context":
        elements = _list(block.get("elements"), MAX_CONTEXT_ELEMENTS, f"{where}/elements")
        for i, element in enumerate(elements):
            if isinstance(element, dict) and element.get("type") in ("plain_text", "mrkdwn"):
                _text(element, TEXT_OBJECT, f"{where}/elements/{i}")
    elif kind == "actions":
        _check_elements(_list(block.get("elements"), MAX_ACTIONS_ELEMENTS, f"{where}/elements"), f"{where}/elements")
    elif kind == "input":
        _text(block.get("label"), INPUT_LABEL, f"{where}/label", plain_only=True)
        if block.get("hint") is not None:
            _text(block["hint"], INPUT_LABEL, f"{where}/hint", plain_only=True)
        element = block.get("element")
        if not isinstance(element, dict):
            raise Refused("invalid_blocks", f"input needs an element [json-pointer:{where}/element]")
        if element.get("placeholder") is not None:
            _text(element["placeholder"], PLACEHOLDER, f"{where}/element/placeholder", plain_only=True)
    elif kind not in UNCHECKED_TYPES:
        raise Refused("invalid_blocks", f"unknown block type {str(kind)[:50]!r} [json-pointer:{where}/type]")


def _check_elements(elements: list[Any], where: str) -> None:
    for i, element in enumerate(elements):
        if not isinstance(element, dict) or not isinstance(element.get("type"), str):
            raise Refused("invalid_blocks", f"an element must be an object with a type [json-pointer:{where}/{i}]")
        if element.get("action_id") is not None:
            _string(element["action_id"], ACTION_ID, f"{where}/{i}/action_id")
        if element["type"] != "button":
            continue
        _text(element.get("text"), BUTTON_TEXT, f"{where}/{i}/text", plain_only=True)
        if element.get("value") is not None:
            _string(element["value"], BUTTON_VALUE, f"{where}/{i}/value")
        if element.get("url") is not None:
            _string(element["url"], BUTTON_URL, f"{where}/{i}/url")
        confirm = element.get("confirm")
        if confirm is not None:
            if not isinstance(confirm, dict):
                raise Refused("invalid_blocks", f"confirm must be an object [json-pointer:{where}/{i}/confirm]")
            for key, limit in CONFIRM_LIMITS.items():
                _text(confirm.get(key), limit, f"{where}/{i}/confirm/{key}", plain_only=key != "text")


def _text(obj: Any, limit: int, where: str, *, plain_only: bool = False) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        raise Refused("invalid_blocks", f"must be a text object [json-pointer:{where}]")
    if plain_only and obj["type"] != "plain_text":
        raise Refused("invalid_blocks", f"must be a plain_text object [json-pointer:{where}]")
    if "emoji" in obj and obj["type"] != "plain_text":
        raise Refused("invalid_blocks", f"emoji is only for plain_text [json-pointer:{where}/emoji]")
    if "verbatim" in obj and obj["type"] != "mrkdwn":
        raise Refused("invalid_blocks", f"verbatim is only for mrkdwn [json-pointer:{where}/verbatim]")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise Refused("invalid_blocks", f"must be more than 0 characters [json-pointer:{where}/text]")
    if len(text) > limit:
        raise Refused("invalid_blocks", f"must be less than {limit + 1} characters [json-pointer:{where}/text]")


def _string(value: Any, limit: int, where: str) -> None:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Refused("invalid_blocks", f"must be a string of 1 to {limit} characters [json-pointer:{where}]")


def _list(value: Any, limit: int, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise Refused("invalid_blocks", f"must be a non-empty list [json-pointer:{where}]")
    if len(value) > limit:
        raise Refused("invalid_blocks", f"no more than {limit} items allowed [json-pointer:{where}]")
    return value
