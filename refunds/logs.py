"""Log lines and request ids: `LOG_FORMAT=json` makes every line of the service's log one JSON object.

A request's id comes from its `X-Request-Id` header when that is sane (1 to 100 visible ASCII
characters), else a new one is made; it is kept in a context variable for as long as the request
runs, written into each JSON log line of that request, and returned in the answer's `X-Request-Id`.
A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id` when known and
`exception` when there is one: nothing from the record's other attributes, so no secret can get in
that the message itself does not hold.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from flask import Flask, Response, request

__all__ = ["REQUEST_ID_HEADER", "JsonFormatter", "configure", "current_request_id", "logging_for", "register",
           "sane_request_id"]

REQUEST_ID_HEADER = "X-Request-Id"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SANE_ID = re.compile(r"[\x21-\x7e]{1,100}")

_request_id: ContextVar[str | None] = ContextVar("refunds_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request this code runs for, or None outside a request."""
    return _request_id.get()


@contextmanager
def logging_for(request_id: str | None) -> Iterator[None]:
    """Lines logged inside the block carry `request_id` (for code that logs after the request ended,
    such as gunicorn's access log)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def sane_request_id(value: str | None) -> str:
    """`value` when it is 1 to 100 visible ASCII characters, else a new random id (32 hex digits).

    Anything else (spaces, control characters, newlines that would forge log lines, non-ASCII,
    a megabyte of text) is replaced, never cleaned up: a cleaned id would no longer match the caller's.
    """
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module's docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _JsonStderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is when a record comes (as `logging.lastResort` does), so that a
    test capturing stderr, or a replaced stream, gets the lines."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  (logging's contract: a handler reports, never raises)
            self.handleError(record)


def configure(log_format: str) -> None:
    """Set up the root logger for `log_format` (`text` or `json`); safe to call again (each app does).

    `text` keeps a handler already there (pytest's, a host application's) and otherwise logs
    `time LEVEL logger: message` to stderr. `json` puts one handler of its own on the root logger,
    replacing the one an earlier call put there.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _JsonStderrHandler)]:
        root.removeHandler(handler)
    if log_format == "json":
        root.addHandler(_JsonStderrHandler())
        root.setLevel(logging.INFO)
    elif not root.handlers:
        logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
    # stripe-python logs every request at INFO; our adapter logs what matters.
    logging.getLogger("stripe").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def register(app: Flask) -> None:
    """Give every request of `app` its id (see `sane_request_id`) and answer it in `X-Request-Id`.

    Register before anything else that logs in a `before_request`, so that its lines carry the id.
    """

    @app.before_request
    def _take_request_id() -> None:
        _request_id.set(sane_request_id(request.headers.get(REQUEST_ID_HEADER)))

    @app.after_request
    def _answer_request_id(response: Response) -> Response:
        request_id = _request_id.get()
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    @app.teardown_request
    def _forget_request_id(_exc: BaseException | None) -> None:
        # A thread serves many requests: the next one must not inherit this one's id.
        _request_id.set(None)
