"""Pages of the approval queue: the `limit` and `cursor` query parameters of GET /pending-refunds.

Keyset pagination in the order refunds joined the queue: by pending id, which only grows (ids are handed out
and committed in order, see `store.insert_pending`). A cursor is the id of the last entry a page listed, and
the next page lists the entries after it. Entries decided between two pages therefore never shift the next
page: nothing is repeated or skipped, and refunds queued meanwhile appear on a later page, even a request
made long ago whose assessment waited (its `requested_at` is older than entries already listed, its place in
the queue is not). Every string the cursor pattern accepts is a position (one past the end lists nothing), so
no well-formed cursor is refused.
"""

from __future__ import annotations

import re

from .errors import InvalidRequest
from .schemas import MAX_ID

__all__ = ["CURSOR_PATTERN", "DEFAULT_LIMIT", "MAX_LIMIT", "decode_cursor", "encode_cursor", "page_limit"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
# The last listed pending id, in decimal: opaque to clients, who pass back `next` as it is.
CURSOR_PATTERN = r"^[0-9]{1,10}$"


def page_limit(value: str | None) -> int:
    """The `limit` query parameter: DEFAULT_LIMIT when absent. Raises InvalidRequest unless 1 to MAX_LIMIT."""
    if value is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,9}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")
    return int(value)


def encode_cursor(pending_id: int) -> str:
    """The cursor of the position just after the queue entry `pending_id`."""
    return str(pending_id)


def decode_cursor(value: str | None) -> int | None:
    """The position (a pending id; entries after it follow) a `cursor` query parameter names, or None when
    absent. Raises InvalidRequest if malformed."""
    if value is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, value):
        raise InvalidRequest("cursor: not a cursor of this queue; follow the `next` link of the previous page.")
    # Beyond the largest id: a position after every entry, so the page is empty.
    return min(int(value), MAX_ID)
