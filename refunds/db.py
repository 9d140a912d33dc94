"""Database engine, transactions and migrations, for SQLite (embedded default) and PostgreSQL.

SQLite: WAL, a busy timeout and `BEGIN IMMEDIATE` for every write transaction, because a deferred
transaction that reads and then writes fails at once with "database is locked" when another
connection wrote in between (waiting cannot help it, so the busy timeout is not applied).
A transaction that only reads (`Database.read()`) starts with a plain `BEGIN`: in WAL mode it reads
a snapshot and neither waits for nor blocks the writer. Write transactions on a SQLite file also queue
on a lock file first (see `WriterQueue`), which hands the turn over the moment the writer before ends.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "READ_ONLY", "SQLITE_BUSY_TIMEOUT_MS", "Database",
           "FileLock", "WriterQueue", "alembic_config", "current_revision", "head_revision", "is_read_only",
           "make_engine", "not_ready", "upgrade"]

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic announces each of its plugins when imported, and how it runs at every upgrade, at INFO:
# ten lines at each start and two on every CLI command. upgrade() says what it applied instead.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)

# The newest migration in migrations/versions: what this code needs the schema to be at. Written here so
# that a start on a migrated database checks one row instead of importing Alembic, which costs each
# process about 10 MB for as long as it runs. tests/test_startup.py checks it against migrations/.
HEAD_REVISION = "0010"

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str) -> Engine:
    """An engine for `url` with the connection settings this service relies on.

    No connection is opened here: the pool connects on first use, so an engine made before
    gunicorn forks opens its connections in each worker.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)

    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's begin event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if is_read_only(conn) else "BEGIN IMMEDIATE")

    return engine


READ_ONLY = "refunds_read_only"


def is_read_only(conn: Connection) -> bool:
    """True when `conn` was opened by `Database.read()`: its transaction only reads."""
    return bool(conn.get_execution_options().get(READ_ONLY))


class FileLock:
    """An exclusive `flock` on the file at `path`, across this process's threads and every process.

    The kernel wakes a waiter the moment the holder lets go, and releases the lock of a holder that dies.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def held(self) -> Iterator[int]:
        """Wait for the lock; held until the block ends. Yields the file's descriptor (for small reads and writes)."""
        with self._threads:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield fd
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        # A descriptor inherited across fork shares its lock with the parent: each process opens its own.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


class WriterQueue:
    """Lets one write transaction at a time, across this process's threads and every process, at a
    SQLite file: a `FileLock` on `<database>-writer.lock`, taken before `BEGIN IMMEDIATE`.

    SQLite makes a second writer wait too, but by sleeping and trying again (1, 2, 5, 10 ... 100 ms
    between tries): two workers that collided lost milliseconds each time, and at 8 connections a
    request spent over a third of its time there. The kernel wakes an flock waiter as soon as the
    lock is released, and releases it when its holder dies. Anything else that writes to the file
    (the sqlite3 shell, a migration) still meets SQLite's own busy timeout.
    """

    def __init__(self, database_path: str) -> None:
        self.database_path = database_path
        self.path = f"{database_path}-writer.lock"
        self._lock = FileLock(self.path)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the turn to write; held until the block ends."""
        with self._lock.held():
            yield

    def close(self) -> None:
        self._lock.close()


class Database:
    """Owns the engine. `transaction()` (to write) and `read()` are the only ways the service uses it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        self.writers = WriterQueue(os.path.abspath(path)) if path and path != ":memory:" else None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One short transaction: committed when the block ends, rolled back if it raises. Do not open
        another inside it: on SQLite the inner one would wait for the outer one for ever."""
        if self.writers is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self.writers.turn(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One transaction that only reads, and takes no write lock: plain `BEGIN` on SQLite (a WAL
        snapshot), `BEGIN READ ONLY` on PostgreSQL, where a write in it fails.

        Never read here and then write in a later `transaction()` on the strength of what was read,
        unless the write re-checks it (a guarded UPDATE): the snapshot may be stale by then.
        """
        with self.engine.connect() as conn:
            options: dict[str, Any] = {READ_ONLY: True}
            if conn.dialect.name == "postgresql":
                options["postgresql_readonly"] = True
            conn.execution_options(**options)
            with conn.begin():
                yield conn

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False

    def upgrade(self) -> list[str]:
        """Apply every migration not yet applied (forward only). Returns what was applied, as
        `revision (description)`, oldest first; empty when the schema was already at head."""
        return upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.writers is not None:
            self.writers.close()


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config pointing at `migrations/`, bound to `engine` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> list[str]:
    """Run `alembic upgrade head` on `engine`. Safe to call from several processes at once.

    Returns the migrations applied, oldest first, as `revision (description)`, and logs them in
    one line; empty (and silent) when the schema was already at head. Alembic is only imported when
    the schema is not at `HEAD_REVISION`.
    """
    if current_revision(engine) == HEAD_REVISION:
        return []
    from alembic import command

    config = alembic_config(engine)
    applied: list[str] = []
    config.attributes["applied"] = applied  # filled by migrations/env.py as each one runs
    command.upgrade(config, "head")
    if applied:
        log.info("database migrated: applied %s", ", ".join(applied))
    return list(applied)


def current_revision(engine: Engine) -> str | None:
    """The schema's migration revision, None for an empty database. Raises SQLAlchemyError when the
    database does not answer."""
    with engine.connect() as conn:
        if not _has_version_table(conn):
            return None
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        conn.rollback()
    return str(revision) if revision is not None else None


def _has_version_table(conn: Connection) -> bool:
    if conn.dialect.name == "sqlite":
        found = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
    else:
        found = text("SELECT 1 FROM information_schema.tables WHERE table_name = 'alembic_version'"
                     " AND table_schema = current_schema()")
    return conn.execute(found).first() is not None


def head_revision() -> str | None:
    """The newest migration in `migrations/`, as Alembic reads it (`HEAD_REVISION` must equal it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def not_ready(url: str) -> str | None:
    """Why a server should not start on the database at `url`, in one line, or None when it may.

    The database must answer, and on PostgreSQL its schema must be at the newest migration (SQLite
    applies its own at start). Without this check an unmigrated PostgreSQL database let gunicorn start,
    `/healthz` answer ok and every refund request fail.
    """
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:  # unreachable, refused, unknown database, bad password, ...
        return f"the database at DATABASE_URL does not answer ({type(exc).__name__})"
    finally:
        engine.dispose()
    head = HEAD_REVISION
    if engine.dialect.name != "sqlite" and current != head:
        return (f"the database at DATABASE_URL is at migration {current or 'none (empty)'} but this code needs "
                f"{head}: run `.venv/bin/flask --app app db upgrade` first")
    return None
