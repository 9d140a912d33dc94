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

A value is known by the keys of every identity it names, in the forms support tools and Slack write
them: `Maria <maria@example.com>` (an RFC 5322 mailbox: the display name and the address both count),
Slack mentions `<@U024MARIA>` and `<@U024MARIA|maria>` (the id and the label), `@maria`,
`mailto:maria@example.com`, and a quoted local part `"maria"@example.com`.

Keys also fold the multi-letter look-alikes TS #39 lists but its skeleton does not map (its prototypes
are single characters): `rn` reads as `m`, `vv` as `w`, `cl` as `d`. Folded on both sides, so the
comparison stays consistent; `rnaria` is `maria`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from email.utils import getaddresses

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


# Multi-letter look-alikes (TS #39 confusables whose source is two letters), folded after the skeleton.
_MULTI_LETTER = (("rn", "m"), ("vv", "w"), ("cl", "d"))
# Slack's mention of a member: `<@U024BE7LH>` or `<@U024BE7LH|label>`.
_SLACK_MENTION = re.compile(r"<@([^|<>]*)(?:\|([^<>]*))?>")
# An address whose local part is quoted: `"maria"@example.com`.
_QUOTED_LOCAL = re.compile(r'"([^"]*)"@([^@]*)')
# What counts as an address for its local-part key: an `@`, and no brackets or quotes (those forms are unwrapped).
_ADDRESS = re.compile(r'[^<>"]*@[^<>"]*')


def _fold(key: str) -> str:
    for letters, letter in _MULTI_LETTER:
        key = key.replace(letters, letter)
    return key


def _named(normal: str) -> set[str]:
    """`normal` (a normal form) and every identity it names, unwrapped from mailbox, mention, `@` and
    `mailto:` forms, repeatedly (`<mailto:maria@example.com>` names `maria@example.com`)."""
    found: set[str] = set()
    todo = [normal]
    while todo:
        value = todo.pop().strip()
        if not value or value in found:
            continue
        found.add(value)
        mention = _SLACK_MENTION.fullmatch(value)
        if mention:
            todo += [part for part in mention.groups() if part]
        if value.startswith("@"):
            todo.append(value[1:])
        if value.startswith("mailto:"):
            todo.append(value.removeprefix("mailto:"))
        if value.startswith("<") and value.endswith(">"):
            todo.append(value[1:-1])
        quoted = _QUOTED_LOCAL.fullmatch(value)
        if quoted:
            todo.append(f"{quoted[1]}@{quoted[2]}")
        # A mailbox, `Display Name <addr>`: only with angle brackets, as a bare `ana maria` is no address list.
        if "<" in value and value.endswith(">") and not mention:
            for display_name, address in getaddresses([value]):
                todo += [display_name, address]
    return found


def keys(value: str) -> frozenset[str]:
    """Every key `value` is known by: for itself and each identity it names (see the module's docstring),
    its skeleton and, for an email address, that of its local part without a `+tag`, with multi-letter
    look-alikes folded. Empty for a value with nothing visible in it."""
    found: set[str] = set()
    for name in _named(normalise(value)):
        found.add(skeleton(name))
        if _ADDRESS.fullmatch(name):
            local, _, domain = name.rpartition("@")
            base = local.split("+", 1)[0]
            found |= {skeleton(base), skeleton(f"{base}@{domain}")}
    found.discard("")
    return frozenset(_fold(key) for key in found)


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
