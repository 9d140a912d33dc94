"""The one polling helper of the tests: wait for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "the condition",
               every: float = 0.02) -> None:
    """Return as soon as `condition()` holds; raise AssertionError naming `what` when it still
    does not after `timeout` seconds. The generous default timeout costs nothing when the
    condition comes true quickly, and keeps a loaded CI machine from failing a correct test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
