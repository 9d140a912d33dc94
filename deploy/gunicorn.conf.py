"""gunicorn settings for production: `.venv/bin/gunicorn -c deploy/gunicorn.conf.py`, from the repository.

It runs behind the buffering reverse proxy of `deploy/nginx.conf`. gunicorn's threads read a
request's bytes as they arrive, so a client that sends one byte every few seconds holds a thread
for as long as it likes: 8 such clients stalled `--workers 2 --threads 4` completely. nginx reads
every request whole (headers within `client_header_timeout`, the body into its buffer) before it
passes it on, so slow clients cost an nginx connection, not a thread here. That is why this binds
to loopback only: nothing but the proxy should reach it.

Settings given on the command line win over these (`--bind`, `--workers`, ...). The file lives in
`deploy/`, not as `./gunicorn.conf.py`, because gunicorn loads that name from the working directory
by itself, which would silently change every other way of starting it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `.venv/bin/gunicorn` puts .venv/bin, not the repository, first on sys.path
    sys.path.insert(0, str(ROOT))

from refunds.config import read_dotenv  # noqa: E402  (after the path above)

# `.env` now, before the settings below read GUNICORN_BIND and WEB_CONCURRENCY from the environment.
read_dotenv()

wsgi_app = "app:create_app()"
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Processes: one per core is the usual start; each runs its own in-process worker thread too.
try:
    workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
except ValueError:
    raise SystemExit(f"configuration error: WEB_CONCURRENCY must be a whole number, "
                     f"got {os.environ['WEB_CONCURRENCY']!r}") from None
# Threads let a process wait on Stripe (up to STRIPE_TIMEOUT_SECONDS) and still answer others.
worker_class = "gthread"
threads = 4
# A process whose main loop is silent this long is replaced. With gthread the main loop keeps
# reporting while threads wait on Stripe, so this does not cut a slow request short.
timeout = 30
graceful_timeout = 30
# nginx opens a new connection for each request (no upstream keepalive): keep idle ones short.
keepalive = 2
# Requests come only from the proxy on this host; its X-Forwarded-* headers are trusted from there.
forwarded_allow_ips = "127.0.0.1"
# Access log on stdout, with approval link tokens cut out: an unspent link is a credential.
accesslog = "-"
logger_class = "refunds.serve.AccessLog"
# gunicorn 27's control socket (gunicornc) is a file in the working directory; this service does not use it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Check the configuration and the database once, in the master, before any worker starts.

    Without this, a bad setting makes every worker exit at boot and the master starts new ones
    for ever, each printing the same error; and an unmigrated PostgreSQL database answers health
    checks while every request fails. Exits with status 1 and one line naming the problem.
    """
    from refunds.config import ConfigError, load_settings
    from refunds.db import not_ready

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    problem = not_ready(settings.database_url)
    if problem is not None:
        raise SystemExit(f"database error: {problem}")
    _metrics_directory()


# Metrics (refunds/metrics.py): every worker process counts its own requests, and a scrape reaches
# one of them; prometheus-client's multiprocess mode makes each write its counts to files in
# PROMETHEUS_MULTIPROC_DIR, which a scrape adds up. The variable must be set before a worker first
# imports prometheus-client, so it is set here, in the master, before any worker forks.
_made_metrics_directory: str | None = None


def _metrics_directory() -> None:
    """Use PROMETHEUS_MULTIPROC_DIR, emptied of an earlier run's files, or a new temporary directory."""
    global _made_metrics_directory
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = _made_metrics_directory = tempfile.mkdtemp(prefix="refunds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    Path(path).mkdir(parents=True, exist_ok=True)
    for stale in Path(path).glob("*.db"):  # counts of processes of an earlier run: they would be added in
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker process ended: its files stop counting as a live process's (prometheus-client's rule)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory this file made (one set in the environment stays)."""
    if _made_metrics_directory is not None:
        shutil.rmtree(_made_metrics_directory, ignore_errors=True)
