"""A stand-in for a Slack incoming webhook that records what is posted to it.

Contract (mirrors Slack's incoming webhooks):

* ``POST <webhook path>`` with a JSON body (or a form field ``payload=<json>``)
  containing ``text``, ``blocks`` or ``attachments`` is recorded in ``messages``
  and answered ``200`` with the text body ``ok``.
* A body that is not a JSON object is answered ``400 invalid_payload``; one with
  none of those fields ``400 no_text``; one whose ``blocks`` break Slack's Block Kit
  limits (text lengths, 50 blocks, fields, ...; see ``standins.slack_limits``)
  ``400 invalid_blocks`` (``invalid_blocks_format`` when ``blocks`` is not a list);
  other paths ``404 no_service``; other methods on the webhook path ``405``. None
  of these are recorded; refusals over the limits are listed in ``refusals``.
* Every POST to the webhook path, whatever its outcome, counts in ``attempts``.

Fault modes, checked in this order for each POST to the webhook path:

1. ``set_down(status, error=None)``: answer ``status`` and record nothing, until ``set_up()``;
2. ``fail_next(n, status, error=None)``: the next ``n`` posts are answered ``status`` and not
   recorded;
3. ``set_timeout(seconds)``: the post is recorded as usual, then the answer is
   held back for ``seconds`` (as when Slack accepted the message but the client
   timed out), until ``set_up()``. The hold-back also applies to failures.

An injected failure's body is ``error`` when given (Slack's own texts: 400 ``invalid_blocks``,
``too_long``; 403 ``invalid_token``, ``action_prohibited``; 404 ``no_service``,
``channel_not_found``; 410 ``channel_is_archived``; ...), else Slack's usual text for the status.

Run ``python -m standins.slack_webhook`` for a foreground server that logs posts.
"""

import argparse
import copy
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from standins._http import StandInRequestHandler, StandInServerBase, run_in_foreground
from standins.slack_limits import check_message

logger = logging.getLogger(__name__)

DEFAULT_PATH = "/services/T000/B000/standin"
DEFAULT_PORT = 12112

# Body texts Slack sends with these statuses.
_ERROR_BODIES: dict[int, str] = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}


class SlackStandIn(StandInServerBase):
    """Records posts to a Slack incoming webhook; thread-safe."""

    def __init__(
        self,
        path: str = DEFAULT_PATH,
        *,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        messages_per_second: float | None = None,
    ) -> None:
        """Create a stopped stand-in answering on ``path`` (must start with ``/``).

        ``on_message`` is called (in the server thread) with each recorded message.
        ``messages_per_second``: take that many posts a second (bursts of up to one second's worth)
        and answer 429 with ``Retry-After: 1`` beyond, as Slack's webhooks do; None (default): no limit.
        """
        super().__init__()
        self._on_message = on_message
        if not path.startswith("/"):
            raise ValueError("path must start with '/'")
        self._path = path
        self._condition = threading.Condition()
        self._messages: list[dict[str, Any]] = []
        self._refusals: list[tuple[str, str]] = []
        self._attempts = 0
        self._fail_remaining = 0
        self._fail_status = 500
        self._fail_error: str | None = None
        self._retry_after = 1
        self._down_status: int | None = None
        self._down_error: str | None = None
        self._answer_delay = 0.0
        self._rate = messages_per_second
        self._tokens, self._tokens_at = messages_per_second or 0.0, time.monotonic()

    def _url(self, host: str, port: int) -> str:
        return f"http://{host}:{port}{self._path}"

    @property
    def webhook_url(self) -> str:
        """The URL to configure as the Slack webhook; needs start()."""
        return self._url(self._host, self.port)

    # -- inspection -------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, Any]]:
        """Parsed JSON bodies of the accepted posts, in arrival order (a copy)."""
        with self._condition:
            return copy.deepcopy(self._messages)

    @property
    def refusals(self) -> list[tuple[str, str]]:
        """(Slack's error, why) for each post refused for breaking Slack's limits, in arrival order."""
        with self._condition:
            return list(self._refusals)

    @property
    def attempts(self) -> int:
        """Number of POSTs to the webhook path, failed and refused ones included."""
        with self._condition:
            return self._attempts

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` messages are recorded and return them all.

        Raises AssertionError naming how many arrived if ``timeout`` seconds pass.
        """
        with self._condition:
            arrived = self._condition.wait_for(lambda: len(self._messages) >= count, timeout)
            if not arrived:
                raise AssertionError(
                    f"expected at least {count} Slack message(s) within {timeout}s, "
                    f"but {len(self._messages)} arrived (after {self._attempts} attempt(s))"
                )
            return copy.deepcopy(self._messages)

    def clear(self) -> None:
        """Forget recorded messages and the attempt count (fault modes are kept)."""
        with self._condition:
            self._messages.clear()
            self._refusals.clear()
            self._attempts = 0

    # -- fault modes ----------------------------------------------------------------
    def fail_next(self, n: int, status: int = 500, *, retry_after: int = 1, error: str | None = None) -> None:
        """Answer the next ``n`` posts with ``status`` (body ``error``, or Slack's usual one) without recording them.

        A 429 carries ``Retry-After: <retry_after>`` (seconds), as Slack's rate limit does.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        if retry_after < 0:
            raise ValueError("retry_after must not be negative")
        _check_error_status(status)
        with self._condition:
            self._fail_remaining = n
            self._fail_status = status
            self._fail_error = error
            self._retry_after = retry_after

    def set_down(self, status: int = 500, error: str | None = None) -> None:
        """Answer every post with ``status`` (body ``error``, or Slack's usual one) without recording it,
        until set_up(). ``set_down(404, "no_service")`` is a webhook Slack removed."""
        _check_error_status(status)
        with self._condition:
            self._down_status = status
            self._down_error = error

    def set_timeout(self, seconds: float) -> None:
        """Hold every answer back ``seconds`` (messages still recorded), until set_up()."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        with self._condition:
            self._answer_delay = seconds

    def set_up(self) -> None:
        """Clear every fault mode, including posts still pending from fail_next()."""
        with self._condition:
            self._down_status = None
            self._down_error = None
            self._fail_remaining = 0
            self._fail_error = None
            self._answer_delay = 0.0
            self._retry_after = 1

    # -- HTTP -------------------------------------------------------------------
    def _serve(self, handler: StandInRequestHandler) -> None:
        body = handler.read_body()
        path = urlsplit(handler.path).path
        if path != self._path:
            self._answer(handler, 404, "no_service")
            return
        if handler.command != "POST":
            self._answer(handler, 405, "method_not_allowed", {"Allow": "POST"})
            return
        with self._condition:
            self._attempts += 1
            delay = self._answer_delay
            error: str | None = None
            if self._down_status is not None:
                status: int | None = self._down_status
                error = self._down_error
            elif self._fail_remaining > 0:
                self._fail_remaining -= 1
                status = self._fail_status
                error = self._fail_error
            elif self._over_rate():
                status, error = 429, None
            else:
                status = None
        if status is not None:
            logger.debug("webhook post refused with %d (injected)", status)
            self._sleep(delay)
            with self._condition:
                retry_after = self._retry_after
            self._answer(handler, status, error or _ERROR_BODIES.get(status, "error"),
                         {"Retry-After": str(retry_after)} if status == 429 else None)
            return
        message, error = _decode_message(body, handler.headers.get("Content-Type", ""))
        if message is None:
            logger.debug("webhook post refused: %s", error)
            self._sleep(delay)
            self._answer(handler, 400, error)
            return
        refused = check_message(message)
        if refused is not None:
            logger.debug("webhook post refused: %s", refused)
            with self._condition:
                self._refusals.append((refused.error, refused.why))
            self._sleep(delay)
            self._answer(handler, 400, refused.error)
            return
        with self._condition:
            self._messages.append(message)
            self._condition.notify_all()
        logger.debug("webhook message recorded")
        if self._on_message is not None:
            try:
                self._on_message(copy.deepcopy(message))
            except Exception:
                logger.exception("on_message callback failed")
        self._sleep(delay)
        self._answer(handler, 200, "ok")

    def _over_rate(self) -> bool:
        """Take a token of ``messages_per_second``; True when none is left (call under the condition)."""
        if self._rate is None:
            return False
        now = time.monotonic()
        self._tokens = min(self._rate, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False

    @staticmethod
    def _answer(
        handler: StandInRequestHandler,
        status: int,
        text: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        if status == 429:
            extra.setdefault("Retry-After", "1")
        handler.send_bytes(status, text.encode("utf-8"), "text/plain; charset=utf-8", extra)


def _check_error_status(status: int) -> None:
    if not 400 <= status <= 599:
        raise ValueError("status must be a 4xx or 5xx HTTP status")


def _decode_message(body: bytes, content_type: str) -> tuple[dict[str, Any] | None, str]:
    """Parse a webhook body; returns (message, "") or (None, Slack's error text)."""
    text = body.decode("utf-8", errors="replace")
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        text = parse_qs(text).get("payload", [""])[0]
    try:
        message = json.loads(text)
    except ValueError:
        return None, "invalid_payload"
    if not isinstance(message, dict):
        return None, "invalid_payload"
    if not any(message.get(key) for key in ("text", "blocks", "attachments")):
        return None, "no_text"
    return message, ""


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground, logging every accepted message."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.slack_webhook",
        description="Stand-in for a Slack incoming webhook.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--path", default=DEFAULT_PATH, help="webhook path")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def log_message(message: dict[str, Any]) -> None:
        logger.info("Slack message: %s", json.dumps(message, ensure_ascii=False))

    standin = SlackStandIn(path=args.path, on_message=log_message)
    url = standin.start(args.host, args.port)
    logger.info("Slack webhook stand-in listening on %s", url)
    run_in_foreground(standin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
