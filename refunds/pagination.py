"""Pages of the approval queue: the `limit` and `cursor` query parameters of GET /pending-refunds.

Keyset pagination: a cursor is a position in the queue's order (requested_at, then pending id), and a page
lists the entries after it. Entries decided between two pages therefore never shift the next page: nothing
is repeated or skipped, and refunds queued meanwhile appear on a later page. Every string the cursor
pattern accepts is a position (one past the end lists nothing), so no well-formed cursor is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import InvalidRequest
from .schemas import MAX_ID

__all__ = ["CURSOR_PATTERN", "DEFAULT_LIMIT", "MAX_LIMIT", "decode_cursor", "encode_cursor", "page_limit"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
# `<microseconds since 1970 of requested_at>-<pending id>`: opaque to clients, who pass back `next` as it is.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9]{1,10}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def page_limit(value: str | None) -> int:
    """The `limit` query parameter: DEFAULT_LIMIT when absent. Raises InvalidRequest unless 1 to MAX_LIMIT."""
    if value is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")
    return int(value)


def encode_cursor(requested_at: datetime, pending_id: int) -> str:
    """The cursor of the position just after the entry (requested_at, pending_id)."""
    delta = requested_at - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros}-{pending_id}"


def decode_cursor(value: str | None) -> tuple[datetime, int] | None:
    """The position a `cursor` query parameter names, or None when absent. Raises InvalidRequest if malformed."""
    if value is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, value):
        raise InvalidRequest("cursor: not a cursor of this queue; follow the `next` link of the previous page.")
    micros, _, pending_id = value.partition("-")
    # Beyond the last representable time or id: a position after every entry, so the page is empty.
    at = _EPOCH + timedelta(microseconds=int(micros)) if int(micros) < (_LAST - _EPOCH) // timedelta(microseconds=1) \
        else _LAST
    return at, min(int(pending_id), MAX_ID)
