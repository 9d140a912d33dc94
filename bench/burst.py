"""A burst of refund requests against a Stripe that allows 25 writes a second: how long until every
refund is executed, against the floor the limit sets (requests / rate).

    .venv/bin/python -m bench.burst --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.burst                # SQLite (one file shared by the instances)

What runs, each in its own process: the Stripe stand-in allowing `--rate` POSTs a second (429
`rate_limit` beyond), seeded with one charge per request; `--instances` service instances under gunicorn
(`bench/gunicorn_bench.py`, 2 gthread workers of 4 threads each), and `--workers` `flask --app app worker`
processes, all on one new database (dropped afterwards), with `STRIPE_RATE_LIMIT=--rate`, the worker out
of the web processes, Slack unset. `--clients` threads send the requests, each with its own
Idempotency-Key and charge, alternating instances. The time runs from the first request sent to the
moment the stand-in has made every refund. The burst is valid only if every answer was 200 or 202,
the stand-in made exactly one refund per request (checked again a second later) and each request ended
succeeded; the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from bench.processes import (
    ROOT,
    Processes,
    free_port,
    load_average,
    run_keeping_logs,
    wait_http,
    wait_ready_line,
)
from bench.run import INTAKE_TOKEN, clean_environment, migrate, scratch_databases
from bench.standin_servers import API_KEY, STATS_PATH, charge_id

TARGET = 1.25


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL server (a new database is made there); default SQLite")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rate", type=float, default=25.0, help="Stripe writes a second (stand-in and service)")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="`flask --app app worker` processes")
    parser.add_argument("--clients", type=int, default=50, help="threads sending the requests")
    return parser.parse_args(argv)


def stats(stripe_url: str) -> dict[str, int]:
    with urllib.request.urlopen(stripe_url + STATS_PATH, timeout=5) as answer:
        result: dict[str, int] = json.loads(answer.read())
        return result


def send_all(urls: list[str], count: int, clients: int) -> Counter[int]:
    """POST `count` refund requests of 1 cent, request n on charge n, alternating `urls`; the status codes."""

    def post(n: int) -> int:
        answer = requests.post(f"{urls[n % len(urls)]}/refund-request", timeout=60,
                               json={"charge_id": charge_id(n), "amount": 1},
                               headers={"Authorization": f"Bearer {INTAKE_TOKEN}", "Idempotency-Key": f"burst-{n}"})
        return answer.status_code

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return Counter(pool.map(post, range(count)))


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Start everything, send the burst, print the figure; whether the burst was valid."""
    with ExitStack() as stack:
        database_url = stack.enter_context(scratch_databases(args.database_url, workdir, ["burst"]))["burst"]
        processes = Processes()
        stack.callback(processes.stop_all)
        child = processes.start("Stripe stand-in", [sys.executable, "-m", "bench.standin_servers", "stripe",
                                                    "--charges", str(args.requests),
                                                    "--write-rate-limit", str(args.rate)],
                                clean_environment(), workdir / "stripe.log", stdout_pipe=True)
        stripe_url = str(wait_ready_line(child)["url"])
        env = {**clean_environment(), "STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": stripe_url,
               "INTAKE_TOKEN": INTAKE_TOKEN, "DATABASE_URL": database_url, "STRIPE_RATE_LIMIT": str(args.rate),
               "WORKER_IN_PROCESS": "false", "RETRY_BACKOFF_SECONDS": "1", "WORKER_POLL_SECONDS": "0.2"}
        migrate(env, workdir / "migrate.log")
        urls = []
        for n in range(args.instances):
            port = free_port()
            instance = processes.start(f"instance {n}", [
                sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn_bench.py"),
                "--bind", f"127.0.0.1:{port}", "app:create_app()"],
                {**env, "BENCH_WORKER_CLASS": "gthread", "BENCH_THREADS": "4"}, workdir / f"instance-{n}.log")
            urls.append(f"http://127.0.0.1:{port}")
            wait_http(instance, urls[-1] + "/healthz")
        for n in range(args.workers):
            processes.start(f"worker {n}", [sys.executable, "-m", "flask", "--app", "app", "worker"], env,
                            workdir / f"worker-{n}.log")
        started = time.monotonic()
        codes = send_all(urls, args.requests, args.clients)
        answered = time.monotonic() - started
        while stats(stripe_url)["refunds"] < args.requests and time.monotonic() - started < 300:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        time.sleep(1.0)
        final = stats(stripe_url)
        floor = args.requests / args.rate
        valid = set(codes) <= {200, 202} and final["refunds"] == args.requests and succeeded(database_url, args)
        print(f"burst: {args.requests} requests, {args.instances} instances, {args.workers} workers, "
              f"{'PostgreSQL' if args.database_url else 'SQLite'}, Stripe allowing {args.rate:g} writes/s")
        print(f"  answers: {dict(sorted(codes.items()))} within {answered:.1f} s; Stripe answered 429 "
              f"{final['rate_limited']} times; refunds made: {final['refunds']}")
        print(f"  every refund executed after {elapsed:.1f} s; floor {floor:.1f} s; "
              f"x{elapsed / floor:.2f} (target <= {TARGET}){'' if valid else '  INVALID'}")
        return valid


def succeeded(database_url: str, args: argparse.Namespace) -> bool:
    """Whether exactly `args.requests` requests exist and every one ended succeeded."""
    from sqlalchemy import create_engine, func, select

    from refunds.tables import refund_requests

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows: list[Any] = list(conn.execute(select(refund_requests.c.status, func.count())
                                                .group_by(refund_requests.c.status)))
    finally:
        engine.dispose()
    return {str(status): int(n) for status, n in rows} == {"succeeded": args.requests}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"load average {load_average()} at start")
    status = run_keeping_logs("burst", lambda workdir: run(args, workdir))
    print(f"load average {load_average()} at the end")
    return status

if __name__ == "__main__":
    raise SystemExit(main())
