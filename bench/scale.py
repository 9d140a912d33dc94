"""Scale-out: refunds a second through 1 service instance, then through 2, on one PostgreSQL database.

    .venv/bin/python -m bench.scale --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

What runs, each in its own process: the Stripe stand-in without a rate limit (seeded with `--charges`
charges; the service's limiter still takes its slot, at STRIPE_RATE_LIMIT=100000, as in `make bench`),
and for each of 1 then 2 instances: a new database on the server (dropped afterwards), that many
instances under gunicorn (`bench/gunicorn_bench.py`: 2 sync workers each) on their own loopback ports,
with the worker out of the web processes and Slack unset. One wrk per instance (`bench/refund.lua`:
every request a new auto-approved refund of 1 cent with its own Idempotency-Key) sends
`--connections` connections in all, split between the instances, for `--seconds` after a warm-up of
`--warmup` seconds. The figure is the 200s a second summed over the instances; the ratio is 2 instances
over 1 (target >= 1.6). Any answer other than 200 or any socket error makes the run invalid (exit 1).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.processes import (
    ROOT,
    Processes,
    cores_busy,
    free_port,
    load_average,
    machine_jiffies,
    run_keeping_logs,
    wait_http,
    wait_ready_line,
)
from bench.run import INTAKE_TOKEN, clean_environment, migrate, run_wrk, scratch_databases
from bench.standin_servers import API_KEY

TARGET = 1.6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server (new databases are made there)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per figure")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections in all, split over instances")
    parser.add_argument("--charges", type=int, default=5000, help="charges seeded at the Stripe stand-in")
    return parser.parse_args(argv)


def drive(urls: list[str], connections: int, seconds: float, charges: int) -> list[dict[str, Any]]:
    """One wrk per url at once, `connections` split between them; each one's BENCH result."""
    nonce = secrets.token_hex(4)

    def one(n: int) -> dict[str, Any]:
        result, _ = run_wrk(urls[n], "refund.lua", max(1, connections // len(urls)), seconds,
                            [f"{nonce}i{n}", INTAKE_TOKEN, str(charges)])
        return result

    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return list(pool.map(one, range(len(urls))))


def measure(args: argparse.Namespace, instances: int, stripe_url: str, database_url: str,
            processes: Processes, workdir: Path) -> tuple[float, bool]:
    """Start `instances` instances on `database_url`, load them, stop them; (200s a second, valid)."""
    env = {**clean_environment(), "STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": stripe_url,
           "INTAKE_TOKEN": INTAKE_TOKEN, "DATABASE_URL": database_url, "STRIPE_RATE_LIMIT": "100000",
           "WORKER_IN_PROCESS": "false"}
    migrate(env, workdir / f"migrate-{instances}.log")
    urls, children = [], []
    for n in range(instances):
        port = free_port()
        child = processes.start(f"{instances} instances: instance {n}", [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn_bench.py"),
            "--bind", f"127.0.0.1:{port}", "app:create_app()"],
            {**env, "BENCH_WORKERS": "2", "BENCH_WORKER_CLASS": "sync"}, workdir / f"instance-{instances}-{n}.log")
        urls.append(f"http://127.0.0.1:{port}")
        children.append(child)
        wait_http(child, urls[-1] + "/healthz")
    drive(urls, args.connections, args.warmup, args.charges)
    busy_before = machine_jiffies()
    results = drive(urls, args.connections, args.seconds, args.charges)
    busy = cores_busy(busy_before, machine_jiffies())
    ok = sum(r["requests"] - r["not_200"] for r in results)
    errors = sum(r["not_200"] + r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"]
                 for r in results)
    rate = ok / max(r["duration_us"] for r in results) * 1e6
    p50 = max(r["p50_us"] for r in results) / 1000
    for child in children:  # the next figure has the cores to itself
        os.killpg(child.process.pid, signal.SIGTERM)
        child.process.wait(timeout=30)
    print(f"  {instances} instance{'s' if instances > 1 else ''} x 2 sync workers: {rate:.0f} refunds/s "
          f"(p50 {p50:.0f} ms, {ok} refunds, {errors} errors or non-200s); the machine's {os.cpu_count()} cores "
          f"{busy:.2f} busy on average; load average {load_average()}")
    return rate, errors == 0


def run(args: argparse.Namespace, workdir: Path) -> bool:
    """Both figures and their ratio; whether every run was valid."""
    with ExitStack() as stack:
        databases = stack.enter_context(scratch_databases(args.database_url, workdir, ["scale1", "scale2"]))
        processes = Processes()
        stack.callback(processes.stop_all)
        child = processes.start("Stripe stand-in", [sys.executable, "-m", "bench.standin_servers", "stripe",
                                                    "--charges", str(args.charges)],
                                clean_environment(), workdir / "stripe.log", stdout_pipe=True)
        stripe_url = str(wait_ready_line(child)["url"])
        print(f"scale-out: {args.connections} connections, {args.seconds:g} s after {args.warmup:g} s of warm-up, "
              f"PostgreSQL, Stripe stand-in without a limit")
        one, one_valid = measure(args, 1, stripe_url, databases["scale1"], processes, workdir)
        two, two_valid = measure(args, 2, stripe_url, databases["scale2"], processes, workdir)
        valid = one_valid and two_valid
        print(f"  2 instances / 1 instance: x{two / one:.2f} (target >= {TARGET}){'' if valid else '  INVALID'}")
        return valid


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.scale needs wrk on PATH", file=sys.stderr)
        return 2
    print(f"load average {load_average()} at start")
    return run_keeping_logs("scale", lambda workdir: run(args, workdir))

if __name__ == "__main__":
    raise SystemExit(main())
