"""Benchmark of the daily report (issue 10): seed a history of `--requests` refund requests (1,000,000 by
default) with their audit, queue, log and ledger rows and a charge cache, then time the report of one day
(queries and rendering, as `flask --app app report daily` runs them) in a child process, and that child's
peak memory (`ru_maxrss`). Targets: at most 1 s and 150 MB.

    .venv/bin/python -m bench.report_bench                       # SQLite file in /tmp, removed afterwards
    .venv/bin/python -m bench.report_bench --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

With --database-url, a new database is created on that server and dropped afterwards. Exit status 1 when a
figure misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TARGET_SECONDS = 1.0
TARGET_MB = 150.0


def measure(url: str, day: date, tz: str, runs: int) -> dict[str, object]:
    """In the child: the report of `day` `runs` times (the first on a new connection); seconds and peak RSS."""
    from zoneinfo import ZoneInfo

    from refunds.db import Database
    from refunds.reports import daily_report
    from refunds.reports.render import as_json, table

    imported_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    db = Database(url)
    times, processed = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        with db.read() as conn:
            report = daily_report(conn, day, ZoneInfo(tz), now=datetime.now(UTC))
        table(report), json.dumps(as_json(report))
        times.append(time.perf_counter() - started)
        processed = sum(t.count for t in report.paths.values())
    db.dispose()
    return {"seconds": times, "after_imports_mb": imported_mb, "processed": processed,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "charges": sum(p.charges for p in report.products), "queue": report.queue.size}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.report_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="days the history spans, ending yesterday")
    parser.add_argument("--charges-per-refund", type=int, default=3, help="charges in the cache per refund")
    parser.add_argument("--tz", default="Europe/Paris", help="the report's time zone")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file and say where")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--date", type=date.fromisoformat, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, workdir: Path) -> int:
    """Seed, then measure yesterday's report and one from the middle of the history. 1 if a target is missed."""
    from bench.report_seed import History, seed
    from bench.run import scratch_databases

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    history = History(end=end, requests=args.requests, days=args.days, charges_per_refund=args.charges_per_refund)
    with scratch_databases(args.database_url, workdir, ["report"]) as databases:
        url = databases["report"]
        started = time.perf_counter()
        counts = seed(url, history)
        print(f"seeded in {time.perf_counter() - started:.0f} s: "
              + ", ".join(f"{n:,} {table}" for table, n in counts.items()))
        failed = False
        for day in ((end - timedelta(days=1)).date(), (end - timedelta(days=args.days // 2)).date()):
            child = subprocess.run([sys.executable, "-m", "bench.report_bench", "--measure", url, "--date",
                                    day.isoformat(), "--tz", args.tz, "--runs", str(args.runs)],
                                   cwd=ROOT, capture_output=True, text=True, check=True)
            figures = json.loads(child.stdout)
            seconds: list[float] = figures["seconds"]
            slowest, peak = max(seconds), figures["peak_mb"]
            failed |= slowest > TARGET_SECONDS or peak > TARGET_MB
            print(f"report of {day} ({args.tz}): {figures['processed']:,} refunds, {figures['charges']:,} charges, "
                  f"queue {figures['queue']}; first run {seconds[0] * 1000:.0f} ms, median "
                  f"{statistics.median(seconds) * 1000:.0f} ms, slowest {slowest * 1000:.0f} ms "
                  f"(target {TARGET_SECONDS:g} s); peak RSS {peak:.0f} MB (after imports "
                  f"{figures['after_imports_mb']:.0f} MB; target {TARGET_MB:g} MB)")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.date, args.tz, args.runs)))
        return 0
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.requests:,} requests over "
          f"{args.days} days; {'PostgreSQL' if args.database_url else 'SQLite'}")
    workdir = Path(tempfile.mkdtemp(prefix="refunds-report-bench-"))
    try:
        return run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
