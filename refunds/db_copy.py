"""`flask --app app db copy --to URL`: every row of the service's database into an empty one.

For moving from SQLite to PostgreSQL with the data so far. Stop the service (web and workers)
first: rows written during the copy would be missed. The contract of `copy_database`:

- the source must be at this code's migration (`HEAD_REVISION`); the target must hold no rows in
  any of the service's tables, and is migrated to head first (an empty database is fine);
- tables are copied parent before child (foreign-key order), in batches, ids preserved, in one
  target transaction: a copy that fails leaves the target as it was (migrated, empty);
- on PostgreSQL every id sequence is set to its table's largest id, so new rows get new ids;
- afterwards the rows of each table are counted on both sides, and any difference is an error.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, Integer, Table, func, inspect, select, text

from .db import HEAD_REVISION, Database, current_revision, upgrade
from .tables import metadata

__all__ = ["CopyRefused", "copy_database"]

DEFAULT_BATCH = 1000
# `called` false: the next id is `value` itself (1, for an empty table).
SET_SEQUENCE = text("SELECT setval(pg_get_serial_sequence(:table, :column), :value, :called)")


class CopyRefused(Exception):
    """The copy cannot start (or did not verify); the message says why and what to do."""


def copy_database(source: Database, target: Engine, *, batch_size: int = DEFAULT_BATCH,
                  progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table of `source` into `target` (see the module docstring). Returns the row count of
    each table, in the order copied. Calls `progress(table, rows)` after each table.

    Raises `CopyRefused` when the source is not at head, the target holds rows, or the counts differ.
    """
    if current_revision(source.engine) != HEAD_REVISION:
        raise CopyRefused(f"the source database is not at migration {HEAD_REVISION}: "
                          "run `.venv/bin/flask --app app db upgrade` on it first")
    _refuse_rows(target)
    upgrade(target)
    with source.read() as reading, target.begin() as writing:
        for table in metadata.sorted_tables:
            rows = reading.execute(select(table).order_by(*table.primary_key.columns),
                                   execution_options={"yield_per": batch_size})
            for batch in rows.mappings().partitions(batch_size):
                writing.execute(table.insert(), [dict(row) for row in batch])
            if writing.dialect.name == "postgresql":
                _advance_sequence(writing, table)
    with source.read() as reading, target.connect() as checking:
        counts = {table.name: _count(reading, table) for table in metadata.sorted_tables}
        copied = {table.name: _count(checking, table) for table in metadata.sorted_tables}
    if copied != counts:
        differ = ", ".join(f"{name} {counts[name]} -> {copied[name]}" for name in counts
                           if counts[name] != copied[name])
        raise CopyRefused(f"row counts differ after the copy: {differ}")
    if progress is not None:
        for name, count in counts.items():
            progress(name, count)
    return counts


def _refuse_rows(target: Engine) -> None:
    existing = set(inspect(target).get_table_names())
    with target.connect() as conn:
        full = [t.name for t in metadata.sorted_tables if t.name in existing and _count(conn, t)]
    if full:
        raise CopyRefused(f"the target database is not empty ({', '.join(full)} hold rows): "
                          "copy only into a new, empty database")


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _advance_sequence(conn: Connection, table: Table) -> None:
    """Point the id sequence of `table` past the ids copied in (rows kept their ids, so the sequence
    never moved): without it the next insert would take id 1 and fail on the primary key."""
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not isinstance(keys[0].type, Integer):
        return
    largest = conn.execute(select(func.max(keys[0]))).scalar()
    conn.execute(SET_SEQUENCE, {"table": table.name, "column": keys[0].name, "value": largest or 1,
                                "called": largest is not None})
