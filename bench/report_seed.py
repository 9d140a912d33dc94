"""Seeds a database with a refund history for the daily report's benchmark: `requests` refund requests over
`days` days ending yesterday, with the rows the service leaves behind (audit rows, the queue, the log, the
ledger), 3% more refunds made outside the service, and the charge cache (`charges_per_refund` per request).

Fast: rows are made in Python from a fixed random seed and written in bulk (executemany in one SQLite
transaction; COPY on PostgreSQL), after `Database.upgrade()` made the schema with every index.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import make_url

from refunds.db import Database
from refunds.tables import iso_utc

__all__ = ["History", "seed"]

CURRENCIES = (("usd", 70), ("eur", 15), ("jpy", 8), ("gbp", 5), ("kwd", 2))
PATHS = (("auto_approved", 62), ("approved", 20), ("rejected", 8), ("expired", 4), ("failed", 6))
EXTERNAL_SHARE = 0.03  # refunds made in the Stripe Dashboard, besides the requests
PRODUCTS = [f"product-{n:02d}" for n in range(20)]
AGENTS = [f"agent{n:02d}@support.example" for n in range(50)]
APPROVERS = [f"manager{n}" for n in range(10)]
REASONS = ("requested_by_customer", "duplicate", "fraudulent")
CHUNK = 20_000

COLUMNS = {
    "refund_requests": ("id", "body_fingerprint", "charge_id", "amount", "currency", "reason", "product",
                        "status", "decision", "requested_by", "stripe_idempotency_key", "stripe_refund_id",
                        "error_code", "created_at", "updated_at", "resolved_at", "attempts"),
    "audit_log": ("request_id", "at", "action", "actor", "channel"),
    "pending_refunds": ("request_id", "charge_id", "amount", "currency", "reason", "requested_at", "status",
                        "decided_by", "decided_at"),
    "refund_log": ("refund_id", "request_id", "charge_id", "amount", "currency", "status", "processed_at",
                   "reason", "decision", "approved_by", "product", "failure_reason"),
    "charge_ledger": ("charge_id", "currency", "amount", "reserved", "refunded", "stripe_refunded", "updated_at"),
    "stripe_charges": ("charge_id", "created_at", "product", "amount", "amount_refunded", "currency", "fee",
                       "fee_currency", "synced_at"),
}


@dataclass(frozen=True)
class History:
    """What to seed: `requests` requests (outside refunds included) over the `days` days before `end`."""

    end: datetime
    requests: int = 1_000_000
    days: int = 365
    charges_per_refund: int = 3
    waiting: int = 500  # still in the approval queue at the end (among `requests`)


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _rows(history: History, seed: int = 42) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, row) for the whole history, in an order that respects foreign keys."""
    rng = random.Random(seed)
    start = history.end - timedelta(days=history.days)
    span = history.days * 86400
    for n in range(1, history.requests - history.waiting + 1):
        created = start + timedelta(seconds=span * (n - 1) / (history.requests - history.waiting) + rng.random())
        path, currency = _pick(rng, PATHS), _pick(rng, CURRENCIES)
        amount = rng.randrange(100, 20_000)
        product, charge_id = rng.choice(PRODUCTS), f"ch_{n:08d}"
        charge_amount = amount if rng.random() < 0.7 else amount * 2
        yield from _charges(rng, history, charge_id, created, product, charge_amount, currency)
        if rng.random() < EXTERNAL_SHARE:
            yield "refund_log", (f"re_x{n:08d}", None, f"{charge_id}_1", amount, currency, "succeeded",
                                 iso_utc(created), rng.choice(REASONS), "external", None, None, None)
        yield from _request(rng, n, path, created, amount, currency, product, charge_id, charge_amount)
    for n in range(history.requests - history.waiting + 1, history.requests + 1):
        yield from _waiting(rng, n, history.end - timedelta(seconds=rng.randrange(60, 5 * 86400)))


def _waiting(rng: random.Random, n: int, created: datetime) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """A request still waiting for a manager at the end of the history."""
    amount, charge_id = rng.randrange(5_001, 50_000), f"ch_{n:08d}"
    yield "refund_requests", (n, "0" * 64, charge_id, amount, "usd", "requested_by_customer", rng.choice(PRODUCTS),
                              "pending_approval", "needs_approval", rng.choice(AGENTS), f"refund-request-{n}", None,
                              None, iso_utc(created), iso_utc(created), None, 0)
    yield "audit_log", (n, iso_utc(created), "requested", "agent", "api")
    yield "audit_log", (n, iso_utc(created), "needs_approval", "policy", "api")
    yield "pending_refunds", (n, charge_id, amount, "usd", "requested_by_customer", iso_utc(created), "pending",
                              None, None)


def _charges(rng: random.Random, history: History, charge_id: str, created: datetime, product: str,
             amount: int, currency: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The refunded charge (made up to 30 days before its refund) and the charges nobody refunded."""
    for k in range(history.charges_per_refund):
        at = created - timedelta(seconds=rng.randrange(0, 30 * 86400)) if k == 0 else created
        fee = amount * 29 // 1000 + 30 if rng.random() < 0.8 else None
        yield "stripe_charges", (charge_id if k == 0 else f"{charge_id}_{k}", iso_utc(at), product, amount,
                                 amount if k == 0 else 0, currency, fee, currency if fee else None, iso_utc(created))


def _request(rng: random.Random, n: int, path: str, created: datetime, amount: int, currency: str, product: str,
             charge_id: str, charge_amount: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The request and every row it leaves on `path`."""
    wait = {"auto_approved": rng.uniform(0.5, 5), "approved": rng.expovariate(1 / 14400),
            "rejected": rng.expovariate(1 / 20000), "expired": 259200.0, "failed": rng.uniform(0.5, 60)}[path]
    resolved = created + timedelta(seconds=wait)
    manual = path in ("approved", "rejected", "expired")
    status = {"auto_approved": "succeeded", "approved": "succeeded"}.get(path, path)
    approver = rng.choice(APPROVERS) if path in ("approved", "rejected") else None
    refund_id = f"re_{n:08d}" if path in ("auto_approved", "approved") else None
    yield "refund_requests", (n, "0" * 64, charge_id, amount, currency, rng.choice(REASONS), product, status,
                              "needs_approval" if manual else "auto_approve", rng.choice(AGENTS),
                              f"refund-request-{n}", refund_id, "charge_disputed" if path == "failed" else None,
                              iso_utc(created), iso_utc(resolved), iso_utc(resolved), 0)
    yield "audit_log", (n, iso_utc(created), "requested", rng.choice(AGENTS), "api")
    yield "audit_log", (n, iso_utc(created + timedelta(seconds=0.3)), "needs_approval" if manual else "auto_approve",
                        "policy", "api")
    yield "audit_log", (n, iso_utc(resolved), "refunded" if refund_id else path, approver or "stripe", "api")
    if manual:
        yield "pending_refunds", (n, charge_id, amount, currency, "requested_by_customer", iso_utc(created),
                                  {"approved": "approved"}.get(path, path), approver or "worker", iso_utc(resolved))
    if path != "failed":
        yield "charge_ledger", (charge_id, currency, charge_amount, 0, amount if refund_id else 0, 0,
                                iso_utc(created))
    if refund_id:
        yield "refund_log", (refund_id, n, charge_id, amount, currency, "succeeded", iso_utc(resolved),
                             rng.choice(REASONS), path, approver, product, None)


def seed(url: str, history: History) -> dict[str, int]:
    """Migrate the empty database at `url` and write `history` into it. Returns rows written per table."""
    db = Database(url)
    db.upgrade()
    db.dispose()
    counts = dict.fromkeys(COLUMNS, 0)
    writer = _SqliteWriter(url) if url.startswith("sqlite") else _PostgresWriter(url)
    with writer:
        buffers: dict[str, list[tuple[Any, ...]]] = {name: [] for name in COLUMNS}
        for table, row in _rows(history):
            buffer = buffers[table]
            buffer.append(row)
            counts[table] += 1
            if len(buffer) >= CHUNK:
                _flush_all(writer, buffers)  # parents before children: foreign keys hold at every flush
        _flush_all(writer, buffers)
    return counts


def _flush_all(writer: Any, buffers: dict[str, list[tuple[Any, ...]]]) -> None:
    for table in COLUMNS:
        if buffers[table]:
            writer.write(table, buffers[table])
            buffers[table].clear()


class _SqliteWriter:
    def __init__(self, url: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("BEGIN")

    def write(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        columns = COLUMNS[table]
        self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                              f"({', '.join('?' * len(columns))})", rows)

    def __enter__(self) -> _SqliteWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


class _PostgresWriter:
    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))

    def write(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        statement = f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN"
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def __enter__(self) -> _PostgresWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.commit()
        with self.conn.cursor() as cursor:
            self.conn.autocommit = True
            cursor.execute("ANALYZE")  # what autovacuum does after a bulk load, before anyone reads it
        self.conn.close()
