"""The one way request bodies become JSON objects: strict, so that every reader sees the same values.

Python's `json` keeps the last of repeated keys (`{"amount": 100, "amount": 999999}` is 999999, where a
signing proxy or another parser may read 100) and accepts `NaN` and `Infinity`, which are not JSON. Both
are refused here, at any depth, with a message that names what is wrong and where.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from .errors import InvalidJson, UnsupportedMediaType

__all__ = ["JSON_MEDIA_TYPE", "loads", "parse_object", "parse_value"]

JSON_MEDIA_TYPE = "application/json"


def parse_object(body: bytes, media_type: str | None) -> dict[str, Any]:
    """The JSON object in `body`, sent as `media_type` (the Content-Type without its parameters).

    Raises what `parse_value` raises, and InvalidJson when the value is not an object.
    """
    data = parse_value(body, media_type)
    if not isinstance(data, dict):
        raise InvalidJson(f"The request body must be a JSON object, not {_kind(data)}.")
    return data


def parse_value(body: bytes, media_type: str | None) -> Any:
    """The JSON value in `body`, sent as `media_type` (the Content-Type without its parameters).

    Raises UnsupportedMediaType unless `media_type` is application/json (any case; parameters such as
    `charset=utf-8` are the caller's to strip), and InvalidJson when the body is empty, not UTF-8, not JSON,
    nested too deeply, has a key twice in one object, or holds NaN or Infinity. The message says which, and
    where (line and column) for a syntax error.
    """
    if (media_type or "").lower() != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"Send the body as JSON with 'Content-Type: {JSON_MEDIA_TYPE}' (this request's Content-Type is "
            f"{media_type or 'missing'}).")
    if not body:
        raise InvalidJson("The request body is empty; it must be a JSON object.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"The request body is not valid UTF-8: byte 0x{body[exc.start]:02x} at position "
                          f"{exc.start} cannot start or continue a character.") from None
    return loads(text)


def loads(text: str, *, what: str = "The request body") -> Any:
    """The JSON value in `text`, strictly: raises InvalidJson (its message starting with `what`) when `text` is not
    JSON, is nested too deeply, has a key twice in one object, or holds NaN or Infinity."""
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _object_without_repeats(pairs, what),
                          parse_constant=lambda name: _no_constant(name, what))
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.") from None
    except RecursionError:  # e.g. 60,000 `[`: refused before it can cost more
        raise InvalidJson(f"{what} must be a JSON object; this one nests arrays and objects too deeply to "
                          "read.") from None
    except ValueError as exc:  # a number longer than Python converts (4,300 digits)
        raise InvalidJson(f"{what} is not valid JSON: {exc}.") from None


def _object_without_repeats(pairs: list[tuple[str, Any]], what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJson(f"{what} repeats the key {json.dumps(key)} in one object; each key may appear once.")
        result[key] = value
    return result


def _no_constant(name: str, what: str) -> NoReturn:
    raise InvalidJson(f"{what} is not valid JSON: {name} is not a JSON value.")


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if value is None:
        return "null"
    return "a number"
