"""Text for Slack messages: values from people that cannot format, cut to Slack's limits.

Slack's mrkdwn has no escape for its formatting characters: `&`, `<` and `>` are escaped as
entities (that stops mentions and links), but `*`, `_`, `~`, a backtick, a `>` at the start of a
line and a new line still format. So a value typed by someone (a product, a note, a name) goes
into Slack in one of two ways, each unable to format:

* `plain`: for a `plain_text` text object, which never formats; lines flattened, `&<>` escaped;
* `literal`: for mrkdwn; lines flattened, `&<>` escaped and the formatting characters replaced by
  look-alikes that Slack does not read as markup (the replacements jsx-slack uses; an `_` inside a
  word, as in `ch_1`, cannot format and is kept). Inside our own code spans too: a backtick
  in the value cannot close the span.

Each cuts its result to a limit *after* escaping (an escaped `<` is four characters) and ends a
cut value with "…"; a cut never splits an entity.
"""

from __future__ import annotations

import re

__all__ = [
    "CONFIRM_TEXT",
    "ELLIPSIS",
    "FALLBACK_TEXT",
    "FIELD_TEXT",
    "HEADER_TEXT",
    "MAX_BLOCKS",
    "MAX_CONTEXT_ELEMENTS",
    "MAX_FIELDS",
    "SECTION_TEXT",
    "TEXT_OBJECT",
    "escape",
    "fit",
    "literal",
    "plain",
]

# Slack's Block Kit limits (characters; counts of items).
SECTION_TEXT = 3000
TEXT_OBJECT = 3000  # any text object, a context element's included
FIELD_TEXT = 2000  # each of a section's fields
HEADER_TEXT = 150
CONFIRM_TEXT = 300  # a confirmation dialog's text
MAX_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
MAX_BLOCKS = 50
# The top-level `text` (notifications, and the message where blocks cannot show). Slack cuts it at
# 40,000 and advises 4,000; ours never needs more than a line or two.
FALLBACK_TEXT = 3000

ELLIPSIS = "…"
EMPTY = "—"  # Slack refuses an empty text object

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Look-alikes that Slack does not read as markup (as jsx-slack's <Escape> does).
_LOOK_ALIKES = {"*": "\u2217", "_": "\u02cd", "~": "\u223c", "`": "\u02cb"}
# Line breaks (all that str.splitlines knows), other control characters and tabs become one space.
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# Bidirectional controls reorder how the text around them is drawn ("\u202e00.1" shows as "1.00"): dropped.
_BIDI = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# A `>` first on a line quotes it, escaped or not; a soft hyphen in front stops that.
_SOFT_HYPHEN = "\u00ad"


def escape(text: str) -> str:
    """`&`, `<` and `>` as Slack's entities: no mention, link or date can come out of `text`."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def plain(value: object, limit: int = TEXT_OBJECT) -> str:
    """`value` for a plain_text object: one line, escaped, at most `limit` characters, never empty."""
    return _fit_units([_ESCAPES.get(ch, ch) for ch in _one_line(value)], limit) or EMPTY


def literal(value: object, limit: int = TEXT_OBJECT) -> str:
    """`value` inside mrkdwn, shown as typed but unable to format; at most `limit` characters, never empty."""
    text = _one_line(value)
    units = [_ESCAPES.get(ch, _LOOK_ALIKES.get(ch, ch)) for ch in text]
    for at, ch in enumerate(text):
        # Slack reads `_` as italics only at a word's edge: snake_case ids (ch_1, re_2) keep theirs.
        if ch == "_" and 0 < at < len(text) - 1 and text[at - 1].isalnum() and text[at + 1].isalnum():
            units[at] = "_"
    stripped = text.lstrip(" ")
    if stripped.startswith(">"):
        at = len(text) - len(stripped)
        units[at] = _SOFT_HYPHEN + units[at]
    return _fit_units(units, limit) or EMPTY


def fit(text: str, limit: int) -> str:
    """Our own text cut to `limit` characters, ending with "…" when cut (it holds no user value)."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def _one_line(value: object) -> str:
    return _BREAKS.sub(" ", _BIDI.sub("", "" if value is None else str(value))).strip()


def _fit_units(units: list[str], limit: int) -> str:
    """Join `units` (one escaped character each) into at most `limit` characters, cutting whole units."""
    if sum(len(u) for u in units) <= limit:
        return "".join(units)
    kept: list[str] = []
    room = limit - len(ELLIPSIS)
    for unit in units:
        if len(unit) > room:
            break
        kept.append(unit)
        room -= len(unit)
    return "".join(kept) + ELLIPSIS
