"""What Slack would make of a message's text: a small model of its mrkdwn, for tests.

`formatting(message)` lists, for every text object (and the top-level `text`), the markup Slack
would act on: line breaks, bold / italic / strike spans, code fences, `<...>` links and mentions
(their targets), quoted lines, and, where Slack parses plain text (mrkdwn without `verbatim`),
bare @-mentions and URLs. plain_text objects format nothing, but they do show line breaks.
Two messages with equal `formatting` look the same apart from their words.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

BOLD = re.compile(r"\*([^*\n]+)\*")
ITALIC = re.compile(r"(?<![A-Za-z0-9])_([^_\n]+)_(?![A-Za-z0-9])")
STRIKE = re.compile(r"~([^~\n]+)~")
ANGLE = re.compile(r"<([^>]*)>")
BARE = re.compile(r"@(?:here|channel|everyone)\b|https?://\S+")


def text_objects(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every text object in the blocks, in order, then the top-level `text` (Slack reads it as mrkdwn)."""
    def walk(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and isinstance(node.get("text"), str):
                yield node
                return
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(message.get("blocks", []))
    yield {"type": "mrkdwn", "text": message.get("text", ""), "verbatim": True, "fallback": True}


def formatting(message: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The markup in each text object (see the module docstring)."""
    found: list[tuple[Any, ...]] = []
    for obj in text_objects(message):
        text = obj["text"]
        if obj["type"] == "plain_text":
            found.append(("plain_text", text.count("\n")))
            continue
        lines = text.split("\n")
        found.append((
            "mrkdwn",
            len(lines),
            tuple(BOLD.findall(text)),
            tuple(ITALIC.findall(text)),
            tuple(STRIKE.findall(text)),
            text.count("`"),
            tuple(token.split("|")[0] for token in ANGLE.findall(text)),
            sum(1 for line in lines if line.lstrip(" ").startswith((">", "&gt;"))),
            () if obj.get("verbatim") else tuple(BARE.findall(text)),
        ))
    return found


def unescape(text: str) -> str:
    """Slack's entities back to characters, as Slack shows them."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
