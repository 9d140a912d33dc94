"""Who is who: normalising names, email addresses and Slack ids so that look-alikes compare equal.

Pure: no Flask, no SQL. Used by self-approval (is the requester one of the approver's identities?),
by intake (refuse a `requested_by` that cannot be read unambiguously) and by the approver store
(emails are kept normalised, so one address cannot belong to two approvers in two spellings).

Two values are the same identity when their *keys* meet. A value's key is the Unicode TS #39
confusable skeleton of its normal form (NFKC, invisible characters removed, case-folded, spaces
trimmed and collapsed), so `" maria"`, `"MARIA"`, full-width `"ｍａｒｉａ"`, `"mar\\u200bia"` and `"marіa"`
with a Cyrillic і all have the key `maria`. The skeletons come from the `disarm` package (its
`skeleton_key`, with TS #39's own digit rule), not from a table of our own.

An email address also has the key of its local part, without a `+tag`: `maria+refunds@example.com`
counts as `maria`. This errs on the side of refusing: a false match only means another approver
must decide, while a missed one lets a person approve their own refund.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable

from disarm import is_mixed_script, skeleton_key

__all__ = ["ambiguity", "keys", "normalise", "same_person", "skeleton", "unambiguous"]

# Invisible characters that are not in a C* category (so `unicodedata.category` misses them) but are
# Default_Ignorable_Code_Point in Unicode: they render as nothing and can be slipped into a name.
_IGNORABLE_OUTSIDE_C = frozenset([
    0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0,
    *range(0x180B, 0x1810),  # Mongolian free variation selectors and vowel separator
    *range(0xFE00, 0xFE10),  # variation selectors 1-16
    *range(0xE0100, 0xE01F0),  # variation selectors 17-256
])
# Whitespace a person can see and that separates words; tabs and newlines are controls (Cc).
_SPACE = "Zs"


def _invisible(char: str) -> bool:
    """Format (Cf: zero-width space/joiners, U+2060, U+FEFF, bidi controls, soft hyphen), control (Cc),
    surrogate, private-use and unassigned characters, line/paragraph separators and the other
    default-ignorable code points."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp") or ord(char) in _IGNORABLE_OUTSIDE_C


def normalise(value: str) -> str:
    """The normal form of a name or address: NFKC, invisible characters removed, case-folded, runs of
    spaces collapsed to one, trimmed. `"  ＭＡＲＩＡ\\u200b "` becomes `"maria"`. Never raises.

    This is how approver emails are stored. It does not map look-alikes from other scripts: see `skeleton`.
    """
    text = unicodedata.normalize("NFKC", value)
    text = "".join(" " if unicodedata.category(c) == _SPACE else c for c in text if not _invisible(c))
    # Case folding can leave text that is not NFKC any more (e.g. "ǰ" -> "ǰ"): normalise again.
    text = unicodedata.normalize("NFKC", text.casefold())
    return " ".join(text.split())


def skeleton(value: str) -> str:
    """The TS #39 confusable skeleton of `normalise(value)`: look-alikes from any script map to one
    prototype (Cyrillic і and Latin i both to `i`). Only for comparing; never shown or stored."""
    normal = normalise(value)
    return skeleton_key(normal, digit_policy="tr39") if normal else ""


def keys(value: str) -> frozenset[str]:
    """Every key `value` is known by: its skeleton and, for an email address, that of its local part
    without a `+tag`. Empty for a value with nothing visible in it."""
    found = {skeleton(value)}
    normal = normalise(value)
    if "@" in normal:
        local, _, domain = normal.rpartition("@")
        base = local.split("+", 1)[0]
        found |= {skeleton(base), skeleton(f"{base}@{domain}")}
    found.discard("")
    return frozenset(found)


def same_person(requester: str, identities: Iterable[str]) -> bool:
    """True if `requester` (a refund's `requested_by`) names any of `identities` (an approver's name,
    email addresses and Slack user id): their keys meet. A requester with nothing visible matches no one."""
    wanted = keys(requester)
    return bool(wanted) and any(wanted & keys(identity) for identity in identities)


def ambiguity(value: str) -> str | None:
    """Why `value` cannot be read unambiguously as a person, or None if it can.

    Refused: invisible, control, private-use or unassigned characters (zero-width space, joiners,
    U+2060, U+FEFF, bidi controls, tabs, newlines), and a word that mixes writing systems (`marіa`
    with a Cyrillic і), whether or not its letters are look-alikes: such values can look like
    someone they are not, and no real name needs them. Case, width, and leading or trailing spaces are
    not ambiguous: `normalise` folds them.
    """
    hidden = sorted({f"U+{ord(c):04X}" for c in value if _invisible(c)})
    if hidden:
        return f"must not contain invisible, control or unassigned characters ({', '.join(hidden[:3])})"
    text = unicodedata.normalize("NFKC", value)
    if is_mixed_script(text, per_word=True):
        return "must not mix letters of different scripts in one word (such as a Cyrillic і in a Latin name)"
    return None


def unambiguous(field: str) -> Callable[[str], str]:
    """A check for pydantic's AfterValidator: returns the value unchanged if it is unambiguous (see
    `ambiguity`), else raises ValueError with a sentence that starts with `field`."""

    def check(value: str) -> str:
        reason = ambiguity(value)
        if reason is not None:
            raise ValueError(f"{field}: {reason}")
        return value

    return check
