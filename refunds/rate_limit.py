"""One Stripe rate limit for every process: each Stripe call first takes the next free slot of its kind.

Stripe counts reads and writes apart (25 a second each in test mode, 100 in live mode) and answers 429
beyond. `RateLimitedGateway` wraps the Stripe adapter: before each call it reserves a slot in a limiter
that every process shares, waits for that slot when it is near, and raises `StripeUnavailable` when it
is further away than the caller may wait (a request then answers `202 processing` and the worker
retries it with the same idempotency key, so none fails for it). A 429 that reaches us anyway
(another client on the same Stripe account, a limit set too high) pushes every kind's next slot
`THROTTLE_PAUSE` seconds out, for every process.

Slots are spaced exactly `1 / rate` apart (a GCRA with no burst): in any second at most `rate` calls
of a kind start, so a token bucket of `rate` per second at Stripe never runs dry. The state is one
number per kind, the time of its next free slot, kept where every process sees it:

* `SqlLimiter`: a row per kind in `stripe_rate_limit` (PostgreSQL; several boxes), one guarded
  upsert `... RETURNING` a call in a transaction that does not wait for its commit to be flushed
  (losing the newest slot in a crash only lets one call through early);
* `RedisLimiter`: one key per kind, moved by a Lua script, when `REDIS_URL` is set;
* `FileLimiter`: beside a SQLite file, under an `flock`: SQLite deployments are one box, and this
  keeps SQLite's single write lock (which every refund needs) out of it;
* `LocalLimiter`: in this process only (an in-memory database, tests).
"""

from __future__ import annotations

import contextvars
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Engine, text

from .db import FileLock
from .errors import StripeThrottled, StripeUnavailable
from .stripe_gateway import ChargeInfo, RefundGateway, RefundInfo, RefundParams

if TYPE_CHECKING:
    from .config import Settings
    from .db import Database

__all__ = ["KINDS", "REQUEST_MAX_WAIT", "THROTTLE_PAUSE", "WORKER_MAX_WAIT", "FileLimiter", "LimiterObserver",
           "LocalLimiter",
           "RateLimitedGateway", "RateLimiter", "RedisLimiter", "SqlLimiter", "limiter_for", "patient",
           "slot"]

KINDS = ("read", "write")
# A request waits this long at most for its slot, then answers `202 processing`: a support tool's
# client should not hang, and the worker takes over with the same key.
REQUEST_MAX_WAIT = 1.0
# The worker waits longer: it has nobody on the line, and its claims hold a lease of minutes.
WORKER_MAX_WAIT = 10.0
# Stripe's 429 says no more than "too many": this long without any call, in every process.
THROTTLE_PAUSE = 1.0

_max_wait: contextvars.ContextVar[float] = contextvars.ContextVar("stripe_rate_limit_max_wait",
                                                                  default=REQUEST_MAX_WAIT)
T = TypeVar("T")


@contextmanager
def patient(max_wait: float) -> Iterator[None]:
    """Within the block (this thread), Stripe calls wait up to `max_wait` seconds for their slot."""
    token = _max_wait.set(max_wait)
    try:
        yield
    finally:
        _max_wait.reset(token)


def slot(next_free: float, now: float, interval: float, max_wait: float) -> float | None:
    """When a call may start given its kind's `next_free` slot, or None when that is more than
    `max_wait` after `now` (then nothing is taken). The kind's next slot becomes the result + `interval`."""
    start = max(next_free, now)
    return start if start - now <= max_wait else None


class RateLimiter(Protocol):
    def reserve(self, kind: str, interval: float, max_wait: float) -> float | None:
        """Take the next slot of `kind`: seconds to wait before calling, or None (nothing taken) when
        the slot is more than `max_wait` away."""
        ...

    def pause(self, seconds: float) -> None:
        """No slot of any kind starts within `seconds` from now, in any process sharing this limiter."""
        ...


class LocalLimiter:
    """`RateLimiter` for this process's threads only."""

    def __init__(self) -> None:
        self._next = dict.fromkeys(KINDS, 0.0)
        self._lock = threading.Lock()

    def reserve(self, kind: str, interval: float, max_wait: float) -> float | None:
        with self._lock:
            now = time.time()
            start = slot(self._next[kind], now, interval, max_wait)
            if start is None:
                return None
            self._next[kind] = start + interval
            return start - now

    def pause(self, seconds: float) -> None:
        with self._lock:
            until = time.time() + seconds
            for kind in KINDS:
                self._next[kind] = max(self._next[kind], until)


class FileLimiter:
    """`RateLimiter` shared by every process on this box: one double per kind in a small file, read and
    written under an exclusive `flock` (microseconds; no database transaction). Times are the wall clock."""

    _FORMAT = "<" + "d" * len(KINDS)

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = FileLock(path)

    def reserve(self, kind: str, interval: float, max_wait: float) -> float | None:
        index = KINDS.index(kind)

        def take(slots: list[float], now: float) -> float | None:
            start = slot(slots[index], now, interval, max_wait)
            if start is None:
                return None
            slots[index] = start + interval
            return start - now

        return self._update(take)

    def pause(self, seconds: float) -> None:
        def push(slots: list[float], now: float) -> None:
            slots[:] = [max(s, now + seconds) for s in slots]

        self._update(push)

    def _update(self, change: Callable[[list[float], float], T]) -> T:
        size = struct.calcsize(self._FORMAT)
        with self._lock.held() as fd:
            raw = os.pread(fd, size, 0)
            slots = list(struct.unpack(self._FORMAT, raw)) if len(raw) == size else [0.0] * len(KINDS)
            result = change(slots, time.time())
            os.pwrite(fd, struct.pack(self._FORMAT, *slots), 0)
            return result


# The database's clock, not each box's: instances on several machines share one timeline. Upserts: a
# kind's row is made by its first call (and again after a TRUNCATE). `excluded.next_at - :interval` is now.
_PG_RESERVE = text("""
    INSERT INTO stripe_rate_limit AS l (kind, next_at)
    VALUES (:kind, extract(epoch from clock_timestamp())::float8 + :interval)
    ON CONFLICT (kind) DO UPDATE SET next_at = greatest(l.next_at, excluded.next_at - :interval) + :interval
    WHERE l.next_at - (excluded.next_at - :interval) <= :max_wait
    RETURNING l.next_at - :interval - extract(epoch from clock_timestamp())::float8 AS wait""")
_PG_PAUSE = text("""
    INSERT INTO stripe_rate_limit AS l (kind, next_at)
    VALUES ('read', extract(epoch from clock_timestamp())::float8 + :seconds),
           ('write', extract(epoch from clock_timestamp())::float8 + :seconds)
    ON CONFLICT (kind) DO UPDATE SET next_at = greatest(l.next_at, excluded.next_at)""")
_PG_NO_FLUSH = text("SET LOCAL synchronous_commit TO OFF")


class SqlLimiter:
    """`RateLimiter` in the `stripe_rate_limit` table of a PostgreSQL database (migration 0008).

    Each reservation is one short transaction that does not wait for its commit to reach the disk:
    the slot matters for a second, and a crash that loses it only lets one call through early.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def reserve(self, kind: str, interval: float, max_wait: float) -> float | None:
        with self._engine.begin() as conn:
            conn.execute(_PG_NO_FLUSH)
            wait = conn.execute(_PG_RESERVE, {"kind": kind, "interval": interval, "max_wait": max_wait}).scalar()
        return None if wait is None else max(float(wait), 0.0)

    def pause(self, seconds: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(_PG_NO_FLUSH)
            conn.execute(_PG_PAUSE, {"seconds": seconds})


# Redis's own clock (TIME), so that every box shares one timeline. Numbers go back as strings: Redis
# turns a Lua number into an integer.
_REDIS_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if start - now > tonumber(ARGV[2]) then return false end
local next_at = start + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', next_at), 'PX', math.ceil((next_at - now) * 1000) + 60000)
return string.format('%.6f', start - now)
"""
_REDIS_PAUSE = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local next_at = math.max(tonumber(redis.call('GET', key) or '0'), until_)
  redis.call('SET', key, string.format('%.6f', next_at), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 60000)
end
return 1
"""


class RedisLimiter:
    """`RateLimiter` in Redis (`REDIS_URL`): one key per kind, `refunds:stripe_rate_limit:<kind>`,
    moved atomically by a Lua script. Keys expire a minute after their last slot."""

    PREFIX = "refunds:stripe_rate_limit:"

    def __init__(self, client: Any) -> None:
        self._reserve = client.register_script(_REDIS_RESERVE)
        self._pause = client.register_script(_REDIS_PAUSE)

    def reserve(self, kind: str, interval: float, max_wait: float) -> float | None:
        wait = self._reserve(keys=[self.PREFIX + kind], args=[repr(interval), repr(max_wait)])
        return None if wait is None else max(float(wait), 0.0)

    def pause(self, seconds: float) -> None:
        self._pause(keys=[self.PREFIX + kind for kind in KINDS], args=[repr(seconds)])


def limiter_for(settings: Settings, db: Database) -> RateLimiter:
    """Redis when `REDIS_URL` is set; else the table on PostgreSQL; else a file beside the SQLite file
    (`<database>-ratelimit`); else (an in-memory database) this process alone."""
    if settings.redis_url:
        import redis

        return RedisLimiter(redis.Redis.from_url(settings.redis_url, socket_timeout=2.0))
    if db.engine.dialect.name == "postgresql":
        return SqlLimiter(db.engine)
    if db.writers is not None:
        return FileLimiter(db.writers.database_path + "-ratelimit")
    return LocalLimiter()


class LimiterObserver(Protocol):
    """Told of each slot a `RateLimitedGateway` takes or cannot take (`metrics.Metrics` counts them)."""

    def slot_waited(self, kind: str, seconds: float) -> None:
        """A call of `kind` took its slot after waiting `seconds` (0 when it was free)."""

    def slot_too_far(self, kind: str) -> None:
        """A call of `kind` was not made: its slot was further than the caller may wait (a request then
        answers `202 processing`, the worker tries again later)."""


class RateLimitedGateway:
    """`RefundGateway` that takes a slot from `limiter` before each call of `gateway`: `rate` reads and
    `rate` writes a second at most, across every process sharing the limiter.

    Waits for the slot up to `REQUEST_MAX_WAIT` (within `patient(...)`: as long as it says); further
    away, raises `StripeUnavailable` without calling Stripe. A `StripeThrottled` (Stripe's 429) pauses
    every process for `THROTTLE_PAUSE` seconds and is raised on. Other attributes pass through unlimited.
    `observer`, when given, is told of every wait and every refusal.
    """

    def __init__(self, gateway: RefundGateway, limiter: RateLimiter, *, rate: float,
                 sleep: Callable[[float], None] = time.sleep, observer: LimiterObserver | None = None) -> None:
        self.inner = gateway
        self.limiter = limiter
        self.observer = observer
        self.interval = 1.0 / rate
        self._sleep = sleep

    def get_charge(self, *, charge_id: str | None = None, payment_intent_id: str | None = None,
                   early_fraud_warnings: bool = False) -> ChargeInfo:
        # One read slot per call it makes: the payment intent, the charge, its early fraud warnings.
        for _ in range(1 + (payment_intent_id is not None) + early_fraud_warnings):
            self._take("read")
        return self._throttled(lambda: self.inner.get_charge(
            charge_id=charge_id, payment_intent_id=payment_intent_id, early_fraud_warnings=early_fraud_warnings))

    def create_refund(self, params: RefundParams) -> RefundInfo:
        self._take("write")
        return self._throttled(lambda: self.inner.create_refund(params))

    def get_refund(self, refund_id: str) -> RefundInfo:
        self._take("read")
        return self._throttled(lambda: self.inner.get_refund(refund_id))

    def find_refund(self, *, charge_id: str, metadata_key: str, metadata_value: str) -> RefundInfo | None:
        self._take("read")
        return self._throttled(lambda: self.inner.find_refund(charge_id=charge_id, metadata_key=metadata_key,
                                                              metadata_value=metadata_value))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _take(self, kind: str) -> None:
        wait = self.limiter.reserve(kind, self.interval, _max_wait.get())
        if self.observer is not None:
            if wait is None:
                self.observer.slot_too_far(kind)
            else:
                self.observer.slot_waited(kind, wait)
        if wait is None:
            raise StripeUnavailable("Stripe's rate limit is reached; the refund is retried shortly.")
        if wait > 0:
            self._sleep(wait)

    def _throttled(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except StripeThrottled:
            self.limiter.pause(THROTTLE_PAUSE)
            raise
