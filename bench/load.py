"""Throughput and latency of POST /refund-request on the real service, against the Stripe stand-in.

Starts the Stripe stand-in in this process, gunicorn (deploy/gunicorn.conf.py) on a free loopback
port on a fresh database, then sends a bounded number of auto-approved refund requests from a
few client threads, and prints requests per second and latency percentiles.

    .venv/bin/python bench/load.py                      # SQLite, 4 workers, 1000 requests
    .venv/bin/python bench/load.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

Loopback only; every request is a real refund on the stand-in (each on its own charge share).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from standins.stripe_api import StripeStandIn  # noqa: E402

KEY = "sk_test_bench_key"
TOKEN = "bench-intake-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp()
    database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
    stripe = StripeStandIn(api_key=KEY)
    stripe.start()
    charges = [stripe.add_charge(1_000_000, "usd")["id"] for _ in range(args.clients)]
    env = {**os.environ, "STRIPE_SECRET_KEY": KEY, "STRIPE_API_BASE": stripe.base_url, "INTAKE_TOKEN": TOKEN,
           "DATABASE_URL": database_url, "SLACK_WEBHOOK_URL": "", "WORKER_POLL_SECONDS": "0.2",
           "FLASK_SKIP_DOTENV": "1"}  # the production gunicorn config; never the developer's .env
    if not database_url.startswith("sqlite"):
        subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                       check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.workers), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/server.log", "wb"),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        answer = session.post(base + "/refund-request", json={"charge_id": charges[i % len(charges)], "amount": 1},
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - started
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        stripe.stop()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    print(f"database      {database_url.split(':')[0]}, {args.workers} gunicorn workers, {args.clients} clients")
    print(f"requests      {args.requests} in {wall:.1f} s = {args.requests / wall:.0f} requests/s")
    print(f"latency       p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    print(f"statuses      {statuses}")
    print(f"stripe saw    {stripe.refund_creations()} refunds")


if __name__ == "__main__":
    main()
