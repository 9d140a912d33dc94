"""Metrics the database knows, computed when `/metrics` is scraped: the same in every process, and
right after a restart. Each scrape runs five short read-only statements (`Database.read()`: no
write lock); the refund totals scan `refund_log`, the others use the indexes of the queues.

Metric families (all prefixed `refunds_`):
- `refunds_total`, `refunded_amount_minor_units_total` {path, currency}: rows of `refund_log`
  (refunds made at Stripe, whatever became of them), `path` being its decision (`auto_approved`,
  `approved`, `external`), amounts in minor units of the currency;
- `requests_in_flight` {status}: requests `received` or `executing` (Stripe not yet answered);
- `pending_approvals`, `pending_oldest_age_seconds`: the approval queue;
- `outbox_waiting`, `outbox_oldest_age_seconds`, `outbox_most_overdue_seconds`, `outbox_dead`:
  Slack messages and clicks not yet done; the most overdue one's lateness is the worker's lag;
- `database_up`: 0 when the statements failed (the others are then left out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import SQLAlchemyError

from .db import Database
from .states import PendingStatus, RequestStatus
from .tables import outbox, pending_refunds, refund_log, refund_requests

__all__ = ["DatabaseCollector"]

log = logging.getLogger(__name__)

REFUNDS = (select(refund_log.c.decision, refund_log.c.currency, func.count(), func.sum(refund_log.c.amount))
           .group_by(refund_log.c.decision, refund_log.c.currency))
IN_FLIGHT = (select(refund_requests.c.status, func.count())
             .where(refund_requests.c.status.in_([RequestStatus.RECEIVED, RequestStatus.EXECUTING]))
             .group_by(refund_requests.c.status))
PENDING = (select(func.count(), func.min(pending_refunds.c.requested_at))
           .where(pending_refunds.c.status == PendingStatus.PENDING))
WAITING = (select(func.count(), func.min(outbox.c.created_at), func.min(outbox.c.next_attempt_at))
           .where(outbox.c.delivered_at.is_(None), outbox.c.dead_at.is_(None)))
DEAD = select(func.count()).where(outbox.c.dead_at.is_not(None))


class DatabaseCollector(Collector):
    """A prometheus-client collector reading `db` at each scrape; `clock()` gives now (UTC, aware)."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            with self.db.read() as conn:
                metrics = list(self._read(conn, self.clock()))
        except SQLAlchemyError:
            log.warning("metrics: the database did not answer", exc_info=True)
            metrics = []
        up = GaugeMetricFamily("refunds_database_up", "1 when the scrape could read the database")
        up.add_metric([], 1 if metrics else 0)
        yield up
        yield from metrics

    def _read(self, conn: Connection, now: datetime) -> Iterator[Metric]:
        def age(since: datetime | None) -> float:
            return max((now - since).total_seconds(), 0.0) if since is not None else 0.0

        count = CounterMetricFamily("refunds", "refunds made at Stripe (refund_log rows)",
                                    labels=["path", "currency"])
        amount = CounterMetricFamily("refunds_refunded_amount_minor_units", "amount of those refunds, minor units",
                                     labels=["path", "currency"])
        for path, currency, rows, total in conn.execute(REFUNDS):
            count.add_metric([path or "unknown", currency], rows)
            amount.add_metric([path or "unknown", currency], total or 0)
        yield from (count, amount)

        in_flight = GaugeMetricFamily("refunds_requests_in_flight", "requests Stripe has not answered yet",
                                      labels=["status"])
        found: dict[str, int] = {status: rows for status, rows in conn.execute(IN_FLIGHT)}
        for status in (RequestStatus.RECEIVED, RequestStatus.EXECUTING):
            in_flight.add_metric([status.value], found.get(status.value, 0))
        yield in_flight

        waiting, oldest = conn.execute(PENDING).one()
        yield GaugeMetricFamily("refunds_pending_approvals", "refunds waiting for an approver", value=waiting)
        yield GaugeMetricFamily("refunds_pending_oldest_age_seconds", "how long the oldest has waited",
                                value=age(oldest))

        waiting, oldest, due = conn.execute(WAITING).one()
        yield GaugeMetricFamily("refunds_outbox_waiting", "Slack messages and clicks not yet done", value=waiting)
        yield GaugeMetricFamily("refunds_outbox_oldest_age_seconds", "age of the oldest of them", value=age(oldest))
        yield GaugeMetricFamily("refunds_outbox_most_overdue_seconds",
                                "how late the most overdue of them is: the worker's lag", value=age(due))
        yield GaugeMetricFamily("refunds_outbox_dead", "messages Slack refused as invalid (parked)",
                                value=conn.execute(DEAD).scalar_one())
