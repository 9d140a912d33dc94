"""The daily report, read from the database: one read transaction, a handful of indexed statements.

The day's rows are selected in SQL by index (requests by `resolved_at`, outside refunds by
`processed_at`, charges by `created_at`) and the charge counts and the queue are aggregated there;
the day's few thousand resolved requests are then tallied in Python, where percentiles are easy.
Statements are built once, at import, with bind parameters; they run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, func, select

from ..tables import (
    UTCDateTime,
    audit_log,
    charge_ledger,
    pending_refunds,
    refund_log,
    refund_requests,
    stripe_charges,
)
from .model import (
    BUCKETS,
    EXECUTED_PATHS,
    PATHS,
    DailyReport,
    Durations,
    Failure,
    Fees,
    ProductRate,
    Queue,
    Tally,
    bucket_of,
    external_path,
    request_path,
)

__all__ = ["MIN_CHARGES", "daily_report", "day_window"]

# Under this many charges in the window, a product's refund rate is flagged as meaning little.
MIN_CHARGES = 20

_START = bindparam("start", type_=UTCDateTime())
_END = bindparam("end", type_=UTCDateTime())
_AS_OF = bindparam("as_of", type_=UTCDateTime())
_r, _l, _p, _ledger, _ch = refund_requests, refund_log, pending_refunds, charge_ledger, stripe_charges

# When the request joined the approval queue (the policy's decision), for the approval wait.
_QUEUED_AT = (select(func.min(audit_log.c.at))
              .where(audit_log.c.request_id == _r.c.id, audit_log.c.action == "needs_approval")
              .scalar_subquery())

_RESOLVED = (
    select(_r.c.id, _r.c.status, _r.c.decision, _r.c.amount, _r.c.currency, _r.c.reason, _r.c.requested_by,
           func.coalesce(_r.c.product, _ch.c.product).label("product"), _r.c.charge_id, _r.c.created_at,
           _r.c.resolved_at, _r.c.error_code, _l.c.refund_id, _l.c.failure_reason, _p.c.decided_by,
           _p.c.decided_at, _QUEUED_AT.label("queued_at"),
           func.coalesce(_ledger.c.amount, _ch.c.amount).label("charge_amount"), _ch.c.fee, _ch.c.fee_currency)
    .select_from(_r.outerjoin(_l, _l.c.request_id == _r.c.id).outerjoin(_p, _p.c.request_id == _r.c.id)
                 .outerjoin(_ledger, _ledger.c.charge_id == _r.c.charge_id)
                 .outerjoin(_ch, _ch.c.charge_id == _r.c.charge_id))
    .where(_r.c.resolved_at >= _START, _r.c.resolved_at < _END)
)

_EXTERNAL = (
    select(_l.c.refund_id, _l.c.charge_id, _l.c.amount, _l.c.currency, _l.c.status, _l.c.reason,
           _l.c.failure_reason, func.coalesce(_l.c.product, _ch.c.product).label("product"),
           func.coalesce(_ledger.c.amount, _ch.c.amount).label("charge_amount"), _ch.c.fee, _ch.c.fee_currency)
    .select_from(_l.outerjoin(_ledger, _ledger.c.charge_id == _l.c.charge_id)
                 .outerjoin(_ch, _ch.c.charge_id == _l.c.charge_id))
    .where(_l.c.decision == "external", _l.c.processed_at >= _START, _l.c.processed_at < _END)
)

_CHARGES = (select(_ch.c.product, func.count().label("charges"))
            .where(_ch.c.created_at >= _START, _ch.c.created_at < _END).group_by(_ch.c.product))

# The queue at a moment: still waiting now, or decided after it. Two statements, each served by an index.
_WAITING = select(func.count(), func.min(_p.c.requested_at)).where(_p.c.status == "pending",
                                                                     _p.c.requested_at < _AS_OF)
_WAITED = select(func.count(), func.min(_p.c.requested_at)).where(_p.c.decided_at >= _AS_OF,
                                                                    _p.c.requested_at < _AS_OF)

def day_window(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants where calendar day `day` in `tz` starts and the next one starts."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def daily_report(conn: Connection, day: date, tz: ZoneInfo, *, now: datetime,
                 min_charges: int = MIN_CHARGES) -> DailyReport:
    """Every figure of calendar day `day` in `tz`, as the database holds them at `now`.

    Read-only: run it in `Database.read()`. The queue is the queue at the day's end, or at `now` when
    the day is not over. Raises only what the database raises.
    """
    start, end = day_window(day, tz)
    window = {"start": start, "end": end}
    tally = _Tallies()
    for row in conn.execute(_RESOLVED, window):
        tally.request(row)
    for row in conn.execute(_EXTERNAL, window):
        tally.external(row)
    charges = {row.product: int(row.charges) for row in conn.execute(_CHARGES, window)}
    return DailyReport(
        day=day, tz=tz.key, start=start, end=end,
        paths={path: tally.paths[path] for path in (*PATHS, *sorted(set(tally.paths) - set(PATHS)))},
        refund_kinds={kind: tally.kinds[kind] for kind in ("full", "partial", "unknown")},
        resolution={path: Durations.of(tally.durations[path]) for path in PATHS if path != "external"},
        resolution_buckets={name: tally.buckets.get(name, 0) for name, _ in BUCKETS},
        approval_wait=Durations.of(tally.approval_waits),
        products=_rates(tally.refunded_by_product, charges, min_charges),
        reasons=_sorted(tally.reasons), agents=_sorted(tally.agents), approvers=_sorted(tally.approvers),
        fees=tally.fees(), queue=_queue(conn, min(end, now)), failures=tally.failures, min_charges=min_charges,
    )


class _Tallies:
    """Accumulates the day's rows into the report's figures."""

    def __init__(self) -> None:
        self.paths: defaultdict[str, Tally] = defaultdict(Tally)
        self.kinds: defaultdict[str, Tally] = defaultdict(Tally)
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        self.buckets: defaultdict[str, int] = defaultdict(int)
        self.approval_waits: list[float] = []
        self.reasons: defaultdict[str, Tally] = defaultdict(Tally)
        self.agents: defaultdict[str, Tally] = defaultdict(Tally)
        self.approvers: defaultdict[str, Tally] = defaultdict(Tally)
        self.refunded_by_product: defaultdict[str | None, set[str]] = defaultdict(set)
        self.fee_by_charge: dict[str, tuple[int | None, str | None]] = {}
        self.failures: list[Failure] = []

    def request(self, row: Any) -> None:
        path = request_path(row.status, row.decision)
        self._common(row, path)
        seconds = (row.resolved_at - row.created_at).total_seconds()
        self.durations[path].append(seconds)
        self.buckets[bucket_of(seconds)] += 1
        self.agents[row.requested_by].add(row.amount, row.currency)
        if path in ("approved", "rejected") and row.decided_by:
            for name in row.decided_by.split(","):
                self.approvers[name.strip()].add(row.amount, row.currency)
        if path == "approved" and row.decided_at is not None and row.queued_at is not None:
            self.approval_waits.append((row.decided_at - row.queued_at).total_seconds())
        if path == "failed":
            self._failure(row, row.id, row.failure_reason or row.error_code)

    def external(self, row: Any) -> None:
        path = external_path(row.status)
        self._common(row, path)
        if path == "failed":
            self._failure(row, None, row.failure_reason or row.status)

    def _common(self, row: Any, path: str) -> None:
        self.paths[path].add(row.amount, row.currency)
        self.reasons[row.reason or "(none)"].add(row.amount, row.currency)
        if path not in EXECUTED_PATHS:
            return
        kind = "unknown" if row.charge_amount is None else "full" if row.amount >= row.charge_amount else "partial"
        self.kinds[kind].add(row.amount, row.currency)
        if row.charge_id:
            self.refunded_by_product[row.product].add(row.charge_id)
            self.fee_by_charge[row.charge_id] = (row.fee, row.fee_currency)

    def _failure(self, row: Any, request_id: int | None, reason: str | None) -> None:
        self.failures.append(Failure(request_id=request_id, refund_id=row.refund_id, charge_id=row.charge_id,
                                     amount=row.amount, currency=row.currency, reason=reason or "unknown"))

    def fees(self) -> Fees:
        kept: dict[str, int] = {}
        unknown = 0
        for fee, currency in self.fee_by_charge.values():
            if fee is None or not currency:
                unknown += 1
            else:
                kept[currency] = kept.get(currency, 0) + int(fee)
        return Fees(kept=dict(sorted(kept.items())), charges=len(self.fee_by_charge), unknown=unknown)


def _rates(refunded: dict[str | None, set[str]], charges: dict[str | None, int], minimum: int) -> list[ProductRate]:
    """Refund rate per product, products with the most refunded charges first."""
    rates = []
    for product in set(refunded) | set(charges):
        count, total = len(refunded.get(product, ())), charges.get(product, 0)
        rates.append(ProductRate(product=product, refunded_charges=count, charges=total,
                                 rate=count / total if total else None, too_few_charges=total < minimum))
    return sorted(rates, key=lambda r: (-r.refunded_charges, -r.charges, r.product or ""))


def _sorted(tallies: dict[str, Tally]) -> dict[str, Tally]:
    """Largest count first, then by name: the order people read a breakdown in."""
    return dict(sorted(tallies.items(), key=lambda item: (-item[1].count, item[0])))


def _queue(conn: Connection, as_of: datetime) -> Queue:
    size, oldest = 0, None
    for statement in (_WAITING, _WAITED):
        count, first = conn.execute(statement, {"as_of": as_of}).one()
        size += int(count)
        oldest = first if oldest is None or (first is not None and first < oldest) else oldest
    return Queue(as_of=as_of, size=size, oldest_requested_at=oldest)
