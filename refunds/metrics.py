"""Prometheus metrics at `GET /metrics`, for ops.

The route exists only when `METRICS_TOKEN` is set, and answers only `Authorization: Bearer <it>`
(else `401`); without the setting `/metrics` is `404` like any unknown path. It is an ops endpoint,
not part of the API, so `/openapi.json` leaves it out. Nothing secret is a label or a value.

Counted in each process (`refunds_` prefix): `http_requests_total` {endpoint, method, status}, with
`endpoint` the route's pattern (`/refunds/<int:request_id>`, never a token) or `unmatched`;
`http_request_duration_seconds` {endpoint}; `stripe_call_duration_seconds` {operation} and
`stripe_errors_total` {operation, code} (the domain error's code), measured around the gateway by
`instrument_gateway`. Read from the database at each scrape: see `database_metrics`.

Under gunicorn several processes serve: with `PROMETHEUS_MULTIPROC_DIR` set before prometheus-client
is first imported (deploy/gunicorn.conf.py sees to it), each process writes its counts to files there
and a scrape adds up every process's. Without it, counts live in this process only.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from datetime import datetime
from time import perf_counter
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from .database_metrics import DatabaseCollector
from .db import Database
from .errors import RefundError
from .http_errors import error_answer
from .stripe_gateway import ChargeInfo, RefundGateway, RefundInfo, RefundParams

__all__ = ["InstrumentedGateway", "Metrics", "instrument_gateway", "register"]

T = TypeVar("T")


class Metrics:
    """The metrics one application counts in its process, and what a scrape answers."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in files, gathered per scrape: registering them too
        # would answer this process's counts twice.
        self.registry = CollectorRegistry()
        own = None if self.multiprocess else self.registry
        self.http_requests = Counter("refunds_http_requests", "HTTP requests answered",
                                     ["endpoint", "method", "status"], registry=own)
        self.http_seconds = Histogram("refunds_http_request_duration_seconds", "time to answer a request",
                                      ["endpoint"], registry=own)
        self.stripe_seconds = Histogram("refunds_stripe_call_duration_seconds", "time of one Stripe call, retries "
                                        "included", ["operation"], registry=own)
        self.stripe_errors = Counter("refunds_stripe_errors", "Stripe calls that raised, by the error's code",
                                     ["operation", "code"], registry=own)
        # The shared Stripe rate limit (`rate_limit.RateLimitedGateway` tells these, as a LimiterObserver).
        self.rate_limit_wait = Histogram("refunds_stripe_rate_limit_wait_seconds", "time a Stripe call waited "
                                         "for its rate-limit slot (0 when it was free)", ["kind"], registry=own)
        self.rate_limit_too_far = Counter("refunds_stripe_rate_limit_deferred", "Stripe calls not made because "
                                          "their slot was further than the caller may wait (a request answers "
                                          "202 processing)", ["kind"], registry=own)
        self.database = DatabaseCollector(db, clock)
        if not self.multiprocess:
            self.registry.register(self.database)

    def slot_waited(self, kind: str, seconds: float) -> None:
        """See `rate_limit.LimiterObserver`."""
        self.rate_limit_wait.labels(kind).observe(seconds)

    def slot_too_far(self, kind: str) -> None:
        """See `rate_limit.LimiterObserver`."""
        self.rate_limit_too_far.labels(kind).inc()

    def scrape(self) -> bytes:
        """The exposition text of every metric (see the module docstring)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(self.database)
        return generate_latest(registry)


class InstrumentedGateway:
    """A `RefundGateway` that times each call of the one it wraps and counts the errors it raises.

    Anything else is the wrapped gateway's (attributes are passed through).
    """

    def __init__(self, gateway: RefundGateway, metrics: Metrics) -> None:
        self.wrapped = gateway
        self._metrics = metrics

    def get_charge(self, *, charge_id: str | None = None, payment_intent_id: str | None = None,
                   early_fraud_warnings: bool = False) -> ChargeInfo:
        return self._timed("get_charge", lambda: self.wrapped.get_charge(
            charge_id=charge_id, payment_intent_id=payment_intent_id, early_fraud_warnings=early_fraud_warnings))

    def create_refund(self, params: RefundParams) -> RefundInfo:
        return self._timed("create_refund", lambda: self.wrapped.create_refund(params))

    def get_refund(self, refund_id: str) -> RefundInfo:
        return self._timed("get_refund", lambda: self.wrapped.get_refund(refund_id))

    def find_refund(self, *, charge_id: str, metadata_key: str, metadata_value: str) -> RefundInfo | None:
        return self._timed("find_refund", lambda: self.wrapped.find_refund(
            charge_id=charge_id, metadata_key=metadata_key, metadata_value=metadata_value))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def _timed(self, operation: str, call: Callable[[], T]) -> T:
        started = perf_counter()
        try:
            return call()
        except RefundError as exc:
            self._metrics.stripe_errors.labels(operation, exc.code).inc()
            raise
        finally:
            self._metrics.stripe_seconds.labels(operation).observe(perf_counter() - started)


def instrument_gateway(gateway: RefundGateway, metrics: Metrics) -> RefundGateway:
    """`gateway`, with its calls timed and its errors counted in `metrics`."""
    return InstrumentedGateway(gateway, metrics)


def register(app: Flask, metrics: Metrics, token: str | None) -> None:
    """Count every request of `app`, and serve `GET /metrics` when `token` is set (see the module docstring)."""

    @app.before_request
    def _start_clock() -> None:
        g.metrics_started = perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.http_requests.labels(endpoint, request.method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.http_seconds.labels(endpoint).observe(perf_counter() - started)
        return response

    if token is None:
        return
    expected = f"Bearer {token}".encode()

    @app.get("/metrics")
    def metrics_view() -> Response:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            answer = error_answer("unauthorized", "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'.", 401)
            answer.headers["WWW-Authenticate"] = "Bearer"
            return answer
        return Response(metrics.scrape(), content_type=CONTENT_TYPE_LATEST)
