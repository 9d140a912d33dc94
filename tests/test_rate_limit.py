"""Stripe's rate limit shared by every process: slots spaced 1/rate apart, a bounded wait, and a 429
that pauses every process (the pause is recorded by one process and respected by another)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from refunds.db import Database
from refunds.errors import StripeThrottled, StripeUnavailable
from refunds.rate_limit import (
    FileLimiter,
    LocalLimiter,
    RateLimitedGateway,
    RateLimiter,
    RedisLimiter,
    SqlLimiter,
    patient,
    slot,
)
from refunds.stripe_gateway import RefundParams, StripeGateway
from standins.stripe_api import StripeStandIn
from tests.conftest import STRIPE_KEY

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/15"


def test_a_slot_is_the_next_free_one_and_none_when_it_is_further_than_the_wait_allowed() -> None:
    assert slot(0.0, 100.0, 0.04, 1.0) == 100.0
    assert slot(100.5, 100.0, 0.04, 1.0) == 100.5
    assert slot(101.5, 100.0, 0.04, 1.0) is None


def _redis_limiter() -> RedisLimiter:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    client.delete(*(RedisLimiter.PREFIX + kind for kind in ("read", "write")))
    return RedisLimiter(client)


@pytest.fixture(params=["local", "file", "database", "redis"])
def limiter(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[RateLimiter]:
    """Each limiter; the database one on PostgreSQL only (SQLite uses the file)."""
    if request.param == "local":
        yield LocalLimiter()
    elif request.param == "file":
        yield FileLimiter(str(tmp_path / "refunds.db-ratelimit"))
    elif request.param == "redis":
        yield _redis_limiter()
    else:
        if database_url.startswith("sqlite"):
            pytest.skip("SQLite keeps the limit in a file (the `file` case)")
        db = Database(database_url)
        yield SqlLimiter(db.engine)
        db.dispose()


def test_reservations_are_spaced_one_interval_apart_and_refused_past_the_wait_allowed(limiter: RateLimiter) -> None:
    waits = [limiter.reserve("write", 0.1, 0.55) for _ in range(8)]
    taken = [w for w in waits if w is not None]
    assert len(taken) == 6, waits  # 0, 0.1, ... 0.5; the 7th and 8th would wait 0.6 and 0.7
    assert all(abs(b - a - 0.1) < 0.02 for a, b in itertools.pairwise(taken)), taken
    assert (limiter.reserve("read", 0.1, 0.0) or 0.0) < 0.02  # reads have their own slots


def test_a_pause_pushes_every_kind_out(limiter: RateLimiter) -> None:
    limiter.pause(0.5)
    assert limiter.reserve("read", 0.1, 0.2) is None
    wait = limiter.reserve("write", 0.1, 1.0)
    assert wait is not None and 0.4 < wait <= 0.5


_PAUSE_IN_ANOTHER_PROCESS = """
import sys
from refunds.rate_limit import FileLimiter, SqlLimiter, RedisLimiter
kind, where = sys.argv[1], sys.argv[2]
if kind == "file":
    limiter = FileLimiter(where)
elif kind == "database":
    from refunds.db import Database
    limiter = SqlLimiter(Database(where).engine)
else:
    import redis
    limiter = RedisLimiter(redis.Redis.from_url(where))
limiter.pause(2.0)
"""


@pytest.mark.parametrize("kind", ["file", "database", "redis"])
def test_a_pause_recorded_by_one_process_is_respected_by_another(kind: str, tmp_path: Path,
                                                                 database_url: str) -> None:
    limiter: RateLimiter
    if kind == "file":
        where = str(tmp_path / "refunds.db-ratelimit")
        limiter = FileLimiter(where)
    elif kind == "redis":
        limiter, where = _redis_limiter(), REDIS_URL
    else:
        if database_url.startswith("sqlite"):
            pytest.skip("SQLite keeps the limit in a file (the `file` case)")
        where = database_url
        db = Database(database_url)
        limiter = SqlLimiter(db.engine)
    assert (limiter.reserve("write", 0.04, 0.0) or 0.0) < 0.02
    subprocess.run([sys.executable, "-c", _PAUSE_IN_ANOTHER_PROCESS, kind, where], cwd=ROOT, check=True, timeout=60)
    wait = limiter.reserve("write", 0.04, 5.0)
    if kind == "database":
        db.dispose()
    assert wait is not None and 1.0 < wait <= 2.0


def _gateway(stripe: StripeStandIn, limiter: RateLimiter, rate: float = 25.0) -> RateLimitedGateway:
    return RateLimitedGateway(StripeGateway(STRIPE_KEY, api_base=stripe.base_url, max_network_retries=0),
                              limiter, rate=rate)


def _params(charge_id: str, key: str) -> RefundParams:
    return RefundParams(charge_id=charge_id, amount=100, reason="requested_by_customer", idempotency_key=key)


def test_a_429_from_stripe_pauses_every_process_sharing_the_limiter(tmp_path: Path) -> None:
    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charge = stripe.add_charge(10_000, "usd")["id"]
        stripe.inject("error", status=429, headers={"Stripe-Should-Retry": "false"})
        path = str(tmp_path / "refunds.db-ratelimit")
        gateway = _gateway(stripe, FileLimiter(path))
        with pytest.raises(StripeThrottled):
            gateway.create_refund(_params(charge, "key-1"))
        other_process = FileLimiter(path)
        wait = other_process.reserve("read", 0.04, 5.0)
        assert wait is not None and wait > 0.8
        assert stripe.refund_creations() == 0


def test_a_call_whose_slot_is_too_far_is_refused_as_unavailable_without_reaching_stripe(tmp_path: Path) -> None:
    with StripeStandIn(api_key=STRIPE_KEY) as stripe:
        charge = stripe.add_charge(10_000, "usd")["id"]
        gateway = _gateway(stripe, LocalLimiter(), rate=1.0)
        gateway.create_refund(_params(charge, "key-1"))
        with patient(0.5), pytest.raises(StripeUnavailable):
            gateway.create_refund(_params(charge, "key-2"))
        started = time.monotonic()
        with patient(2.0):
            gateway.create_refund(_params(charge, "key-2"))
        assert time.monotonic() - started > 0.5
        assert stripe.refund_creations() == 2
        assert sum(1 for r in stripe.requests if r["method"] == "POST") == 2


def test_the_stand_in_allows_its_write_rate_and_answers_429_beyond_as_stripe_does() -> None:
    with StripeStandIn(api_key=STRIPE_KEY, write_rate_limit=5) as stripe:
        charge = stripe.add_charge(100_000, "usd")["id"]
        gateway = StripeGateway(STRIPE_KEY, api_base=stripe.base_url, max_network_retries=0)
        outcomes = []
        for n in range(8):
            try:
                gateway.create_refund(_params(charge, f"key-{n}"))
                outcomes.append("ok")
            except StripeThrottled:
                outcomes.append("429")
        assert outcomes.count("ok") in (5, 6) and stripe.rate_limited == 8 - outcomes.count("ok")
        assert stripe.refund_creations() == outcomes.count("ok")
        gateway.get_charge(charge_id=charge)  # reads are not limited


def test_requests_over_the_limit_answer_processing_and_the_worker_refunds_each_once_with_its_key(
    database_url: str,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from refunds import create_app
    from refunds.tables import refund_requests
    from tests.conftest import INTAKE_TOKEN, make_settings
    from tests.polling import wait_until
    from tests.test_refund_request import rows

    with StripeStandIn(api_key=STRIPE_KEY, write_rate_limit=4) as stripe:
        charges = [stripe.add_charge(1000, "usd")["id"] for _ in range(12)]
        app = create_app(make_settings(database_url, stripe_api_base=stripe.base_url, stripe_rate_limit=4.0,
                                       retry_backoff_seconds=0.2))
        if not database_url.startswith("sqlite"):
            app.extensions["refund_service"].db.upgrade()

        def ask(n: int) -> int:
            return app.test_client().post("/refund-request", json={"charge_id": charges[n], "amount": 100},
                                          headers={"Authorization": f"Bearer {INTAKE_TOKEN}",
                                                   "Idempotency-Key": f"over-{n}"}).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(ask, range(12)))
        assert set(codes) == {200, 202}, codes  # some waited for their slot, the others went to the worker
        worker = app.extensions["refund_worker"]
        wait_until(lambda: worker.run_once() >= 0 and all(r.status == "succeeded" for r in rows(app, refund_requests)),
                   timeout=60, what="the worker to make every refund")
        assert stripe.refund_creations() == 12 and stripe.rate_limited == 0
        assert sorted(r["charge"] for r in stripe.refunds) == sorted(charges)
        keys = stripe.idempotency_keys()
        assert len(set(keys)) == 12 and len(keys) == 12  # one call each: never refused, never repeated
        app.extensions["refund_service"].db.dispose()
