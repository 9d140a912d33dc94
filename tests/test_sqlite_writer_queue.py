"""SQLite write transactions queue on a lock file, across threads and processes, forked ones included."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text

from refunds.db import Database


def _take_turn_in_child(db: Database, go: Any, done: Any) -> None:
    go.wait(10)
    with db.writers.turn():  # type: ignore[union-attr]
        done.set()


def _make(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/q.db")
    with db.transaction() as conn:
        conn.execute(text("CREATE TABLE t (v TEXT)"))
    return db


def test_a_process_forked_with_the_database_waits_for_the_parents_turn(tmp_path: Path) -> None:
    """A lock file descriptor inherited across fork would share the parent's lock: the child must open its own."""
    db = _make(tmp_path)  # the parent has used its queue (its lock file is open) before forking
    db.engine.dispose()  # SQLite connections must not cross a fork; the queue's descriptor is what is tested
    fork = multiprocessing.get_context("fork")
    go, done = fork.Event(), fork.Event()
    child = fork.Process(target=_take_turn_in_child, args=(db, go, done))
    child.start()
    assert db.writers is not None
    with db.writers.turn():
        go.set()
        assert not done.wait(0.5), "the child took its turn while the parent held it"
    assert done.wait(10)
    child.join(10)
    assert child.exitcode == 0
    db.dispose()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    db = _make(tmp_path)
    finished = threading.Event()

    def write() -> None:
        with db.transaction() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES ('thread')"))
        finished.set()

    with db.transaction() as conn:
        conn.execute(text("INSERT INTO t (v) VALUES ('first')"))
        thread = threading.Thread(target=write)
        thread.start()
        assert not finished.wait(0.3)
    thread.join(10)
    with db.read() as conn:
        assert [row.v for row in conn.execute(text("SELECT v FROM t ORDER BY rowid"))] == ["first", "thread"]
    db.dispose()
