"""`make bench`: the service against a bare Flask baseline, side by side, on loopback.

    .venv/bin/python -m bench.run                         # SQLite; about 4 minutes
    .venv/bin/python -m bench.run --slack-delay 0.5       # also the service with Slack answering after 500 ms
    .venv/bin/python -m bench.run --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Starts, each in its own process: the Stripe stand-in (bench/standin_servers.py, 1000 charges to
refund 1 cent at a time), optionally the Slack stand-in, the baseline (bench/baseline_app.py) and
the service (app:create_app()), both under gunicorn with bench/gunicorn_bench.py (2 sync workers
each), the service on a fresh database with Slack unset (log only). Then it drives them with wrk
(bench/refund.lua: every request a new auto-approved refund with its own Idempotency-Key), at 1
and 8 connections, repetitions interleaved (baseline, service, baseline, service, ...; the apps not
being measured are stopped with SIGSTOP meanwhile, so their deferred work waits for their own runs), and prints
each run, the medians, and each target's ratio to the baseline. A run is a figure only if every
answer was a 200 and the stand-in made a refund for each. It also measures the stand-in alone
(wrk straight at it with the same two calls), the CPU each process spent, and, after at least
--rss-after requests to the service, the resident memory of each gunicorn worker.

Everything it starts is stopped when it ends, on an error, Ctrl-C or SIGTERM; if this process
is killed outright, its children get SIGTERM from the kernel (PR_SET_PDEATHSIG). Exit status: 0,
1 when a run was invalid, 2 when something could not start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import (
    CLOCK_TICKS,
    ROOT,
    Child,
    Processes,
    SetupError,
    cpu_seconds,
    free_port,
    load_average,
    machine_jiffies,
    process_tree,
    rss_mb,
    tail,
    wait_http,
    wait_ready_line,
)
from bench.report import BASELINE, SERVICE, Run, figures, format_figures, format_run, format_slack_effect
from bench.standin_servers import API_KEY

BENCH = ROOT / "bench"
INTAKE_TOKEN = "bench-intake-token-0123456789"
SERVICE_SLACK = "service+slack"


# -- what runs --------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    url: str
    child: Child
    served: int = 0

    def pids(self) -> list[int]:
        return process_tree(self.child.process.pid)


@dataclass
class Bench:
    """The running stand-ins and apps of one benchmark."""

    processes: Processes
    workdir: Path
    stripe_url: str
    stripe: Child
    charges: int
    targets: dict[str, Target] = field(default_factory=dict)
    extra_pids: list[int] = field(default_factory=list)  # the Slack stand-in, if any
    slack_url: str | None = None

    def stripe_stats(self) -> tuple[int, int]:
        """(refunds created, calls received) by the Stripe stand-in so far."""
        with urllib.request.urlopen(self.stripe_url + "/bench/stats", timeout=10) as answer:
            stats = json.load(answer)
        return int(stats["refunds"]), int(stats["calls"])

    def all_pids(self) -> list[int]:
        pids = [self.stripe.process.pid, *self.extra_pids]
        for target in self.targets.values():
            pids.extend(target.pids())
        return pids


def clean_environment() -> dict[str, str]:
    """This environment without any setting the service reads (.env.example lists them all)."""
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    env = {key: value for key, value in os.environ.items() if key not in names}
    env["FLASK_SKIP_DOTENV"] = "1"  # never the developer's .env
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_stripe(processes: Processes, workdir: Path, charges: int) -> tuple[Child, str]:
    child = processes.start("Stripe stand-in", [sys.executable, "-m", "bench.standin_servers", "stripe",
                                                "--charges", str(charges)],
                            clean_environment(), workdir / "stripe.log", stdout_pipe=True)
    return child, str(wait_ready_line(child)["url"])


def start_slack(processes: Processes, workdir: Path, delay: float) -> tuple[Child, str]:
    child = processes.start("Slack stand-in", [sys.executable, "-m", "bench.standin_servers", "slack",
                                               "--delay", str(delay)],
                            clean_environment(), workdir / "slack.log", stdout_pipe=True)
    return child, str(wait_ready_line(child)["url"])


def start_app(bench: Bench, name: str, wsgi: str, env: dict[str, str], gunicorn: dict[str, str],
              health_path: str) -> Target:
    port = free_port()
    log = bench.workdir / f"{name.replace('+', '-')}.log"
    child = bench.processes.start(
        name, [sys.executable, "-m", "gunicorn", "-c", str(BENCH / "gunicorn_bench.py"),
               "--bind", f"127.0.0.1:{port}", wsgi],
        {**env, **gunicorn}, log)
    url = f"http://127.0.0.1:{port}"
    wait_http(child, url + health_path)
    target = Target(name, url, child)
    bench.targets[name] = target
    return target


def service_environment(bench: Bench, database_url: str, slack_url: str) -> dict[str, str]:
    # The bench's stand-in has no rate limit: the service's limiter takes its slot before each call as in
    # production (what that costs is measured), never near the limit (bench/burst.py runs against one).
    return {**clean_environment(), "STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": bench.stripe_url,
            "INTAKE_TOKEN": INTAKE_TOKEN, "DATABASE_URL": database_url, "SLACK_WEBHOOK_URL": slack_url,
            "STRIPE_RATE_LIMIT": "100000"}


def migrate(env: dict[str, str], log: Path) -> None:
    with log.open("wb") as log_file:
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, timeout=120, check=False)
    if done.returncode != 0:
        raise SetupError(f"migrating {env['DATABASE_URL']} failed; {log} ends:\n{tail(log)}")


@contextmanager
def scratch_databases(server_url: str | None, workdir: Path, names: Sequence[str]) -> Iterator[dict[str, str]]:
    """A fresh empty database per name: SQLite files in `workdir`, or new PostgreSQL databases on the
    server of `server_url`, dropped afterwards."""
    if server_url is None:
        yield {name: f"sqlite:///{workdir}/{name.replace('+', '-')}.db" for name in names}
        return
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    if not server.drivername.startswith("postgresql"):
        raise SetupError("--database-url must be a PostgreSQL URL (postgresql+psycopg://user@host:port/db)")
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    created: dict[str, str] = {}
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            database = f"refunds_bench_{os.getpid()}_{re.sub(r'[^a-z0-9]', '_', name)}"
            conn.execute(f'CREATE DATABASE "{database}"')  # a name made here, from [a-z0-9_] only
            created[name] = server.set(database=database).render_as_string(hide_password=False)
    try:
        yield created
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for url in created.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


# -- measuring --------------------------------------------------------------------------------
def run_wrk(url: str, script: str, connections: int, seconds: float,
            args: Sequence[str]) -> tuple[dict[str, Any], float]:
    """Run wrk once; returns the BENCH line's JSON and the CPU seconds wrk spent."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(BENCH / script),
         url, "--", *args],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise SetupError(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result: dict[str, Any] = json.loads(line[len("BENCH "):])
    return result, cpu


def settle(bench: Bench, limit: float = 20.0) -> float:
    """Wait until every process of the benchmark is idle (work deferred past the answers, such as the
    service's outbox, is done); returns how long that took."""
    started = time.monotonic()
    pids = bench.all_pids()
    previous = cpu_seconds(pids)
    while time.monotonic() - started < limit:
        time.sleep(0.3)
        now = cpu_seconds(pids)
        if now - previous < 0.3 * 0.05:  # under 5% of one core
            break
        previous = now
    return time.monotonic() - started


@contextmanager
def alone(bench: Bench, target: Target | None) -> Iterator[None]:
    """The apps other than `target` (every app when None) stopped (SIGSTOP) for the block, then resumed.

    An app whose deferred work never ends (the service with a slow Slack: its outbox only grows while it is
    loaded) would otherwise go on working through the other apps' runs: with all three apps running, the
    service's own CPU per refund measured 40% higher. Stopped, an app's work waits for its own runs.
    """
    others = [pid for other in bench.targets.values() if other is not target for pid in other.pids()]
    for pid in others:
        _signal(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            _signal(pid, signal.SIGCONT)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def measure(bench: Bench, target: Target, connections: int, seconds: float) -> Run:
    """One wrk run against `target` alone (see `alone`), with the CPU each process spent until all were idle."""
    with alone(bench, target):
        return _measure(bench, target, connections, seconds)


def _measure(bench: Bench, target: Target, connections: int, seconds: float) -> Run:
    standin_pids = [bench.stripe.process.pid]
    app_pids = target.pids()
    refunds_before, calls_before = bench.stripe_stats()
    all_pids = bench.all_pids()
    app_before, standin_before, all_before = cpu_seconds(app_pids), cpu_seconds(standin_pids), cpu_seconds(all_pids)
    busy_before, processes_before, total_before = machine_jiffies()
    result, load_cpu = run_wrk(target.url, "refund.lua", connections, seconds,
                               [uuid.uuid4().hex[:12], INTAKE_TOKEN, str(bench.charges)])
    busy_after, processes_after, total_after = machine_jiffies()
    ours = cpu_seconds(all_pids) - all_before + load_cpu
    wall = int(result["duration_us"]) / 1e6
    settle(bench)
    target.served += int(result["requests"])
    not_ok = sum(int(result[key]) for key in ("not_200", "connect_errors", "read_errors", "write_errors", "timeouts"))
    refunds_after, calls_after = bench.stripe_stats()
    return Run(
        target=target.name, connections=connections, requests=int(result["requests"]),
        seconds=int(result["duration_us"]) / 1e6, p50_ms=int(result["p50_us"]) / 1000,
        p99_ms=int(result["p99_us"]) / 1000, not_ok=not_ok, refunds=refunds_after - refunds_before,
        calls=calls_after - calls_before,
        app_cpu=cpu_seconds(app_pids) - app_before, standin_cpu=cpu_seconds(standin_pids) - standin_before,
        load_cpu=load_cpu, machine_busy=(busy_after - busy_before) / max(total_after - total_before, 1),
        other_cores=max((processes_after - processes_before) / CLOCK_TICKS - ours, 0.0) / max(wall, 0.001),
    )


def measure_standin(bench: Bench, connections: int, seconds: float) -> str:
    """wrk straight at the Stripe stand-in, the two calls of a refund in turn; one line saying what it managed."""
    with alone(bench, None):
        result, _ = run_wrk(bench.stripe_url, "standin.lua", connections, seconds,
                            [uuid.uuid4().hex[:12], API_KEY, str(bench.charges)])
        settle(bench)
    failed = sum(int(result[key]) for key in ("not_200", "connect_errors", "read_errors", "write_errors", "timeouts"))
    refunds_per_second = int(result["requests"]) / 2 / (int(result["duration_us"]) / 1e6)
    verdict = "" if not failed else f"  INVALID: {failed} calls failed"
    return (f"{connections:>5}  Stripe stand-in alone: {refunds_per_second:,.0f} refunds/s (two calls each), "
            f"p50 {int(result['p50_us']) / 1000:.2f} ms, p99 {int(result['p99_us']) / 1000:.2f} ms per call{verdict}")


def top_up(bench: Bench, target: Target, requests: int, runs: list[Run], budget: float) -> None:
    """Send `target` more refunds (8 connections) until it has served `requests`, or `budget` seconds pass."""
    deadline = time.monotonic() + budget
    while target.served < requests and time.monotonic() < deadline:
        rate = max((r.throughput for r in runs if r.target == target.name and r.connections == 8), default=50.0)
        seconds = min(max((requests - target.served) / max(rate, 1.0) * 1.1, 2.0), deadline - time.monotonic(), 60.0)
        run = measure(bench, target, 8, max(round(seconds), 1))
        if not run.valid:
            print(format_run(run, 0) + "  (memory run)")


def memory_lines(bench: Bench) -> list[str]:
    lines = []
    for target in bench.targets.values():
        workers = [pid for pid in target.pids() if pid != target.child.process.pid]
        sizes = ", ".join(f"{rss_mb(pid):.0f}" for pid in workers)
        lines.append(f"  {target.name:<14} RSS per worker {sizes} MB after {target.served:,} requests")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", default="1,8", help="comma-separated connection counts (default 1,8)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per target and connection count (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load per target first")
    parser.add_argument("--standin-duration", type=float, default=5.0,
                        help="seconds of wrk straight at the Stripe stand-in per connection count (0: skip)")
    parser.add_argument("--rss-after", type=int, default=10_000,
                        help="serve the service at least this many requests before reading RSS (default 10000)")
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server (postgresql+psycopg://user@host:port/db): the service runs on a "
                             "new database created there and dropped afterwards; default: a new SQLite file")
    parser.add_argument("--slack-delay", type=float, default=None,
                        help="also run the service with Slack set, the Slack stand-in answering after this many "
                             "seconds (e.g. 0.5), interleaved with the others, on its own database")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per app (default 2)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class for both apps (default sync)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker for gthread (default 1)")
    parser.add_argument("--charges", type=int, default=1000, help="charges seeded at the Stripe stand-in")
    parser.add_argument("--json", type=Path, default=None, help="also write every run and figure to this file")
    return parser.parse_args(argv)


def start_all(args: argparse.Namespace, processes: Processes, workdir: Path, databases: dict[str, str]) -> Bench:
    """Start the stand-ins and every app, each migrated and answering; raises SetupError."""
    gunicorn = {"BENCH_WORKERS": str(args.workers), "BENCH_WORKER_CLASS": args.worker_class,
                "BENCH_THREADS": str(args.threads)}
    stripe, stripe_url = start_stripe(processes, workdir, args.charges)
    bench = Bench(processes, workdir, stripe_url, stripe, args.charges)
    baseline_env = {**clean_environment(), "STRIPE_SECRET_KEY": API_KEY, "STRIPE_API_BASE": stripe_url}
    start_app(bench, BASELINE, "bench.baseline_app:create_app()", baseline_env, gunicorn, "/")
    slack_url = ""
    if args.slack_delay is not None:
        slack, slack_url = start_slack(processes, workdir, args.slack_delay)
        bench.extra_pids.append(slack.process.pid)
        bench.slack_url = slack_url
    for name, database_url in databases.items():
        env = service_environment(bench, database_url, slack_url if name == SERVICE_SLACK else "")
        migrate(env, workdir / f"migrate-{name.replace('+', '-')}.log")
        start_app(bench, name, "app:create_app()", env, gunicorn, "/healthz")
    return bench


def warm_up(bench: Bench, connections: int, seconds: float) -> None:
    """Unmeasured load on each app: every worker up, the service's worker thread started. Raises SetupError."""
    for target in bench.targets.values():
        warm = measure(bench, target, connections, seconds)
        if not warm.valid:
            raise SetupError(f"{target.name} fails under load: {'; '.join(warm.problems)}; its log "
                             f"({target.child.log}) ends:\n{tail(target.child.log)}")


def measure_interleaved(bench: Bench, connection_counts: Sequence[int], repetitions: int,
                        seconds: float) -> list[Run]:
    """Each target in turn, `repetitions` times, at each connection count; prints each run as it ends."""
    runs: list[Run] = []
    for connections in connection_counts:
        for repetition in range(1, repetitions + 1):
            for target in bench.targets.values():
                run = measure(bench, target, connections, seconds)
                runs.append(run)
                print(format_run(run, repetition), flush=True)
    return runs


def print_summary(args: argparse.Namespace, bench: Bench, runs: list[Run], standin_lines: list[str]) -> None:
    all_figures = figures(runs)
    print()
    print(format_figures(all_figures))
    if args.slack_delay is not None:
        print()
        print("\n".join(format_slack_effect(all_figures, SERVICE_SLACK)))
        assert bench.slack_url is not None
        stats_url = bench.slack_url.split("/services/")[0] + "/bench/stats"
        with urllib.request.urlopen(stats_url, timeout=10) as answer:
            posts = int(json.load(answer)["messages"])
        print(f"       the Slack stand-in was sent {posts:,} messages while {SERVICE_SLACK} answered "
              f"{bench.targets[SERVICE_SLACK].served:,} requests (the rest wait in its outbox)")
    print()
    print("\n".join(standin_lines))
    busiest = max(runs, key=lambda run: run.standin_cpu / run.seconds)
    print(f"       Stripe stand-in during the runs: at most {busiest.standin_cpu / busiest.seconds:.2f} cores "
          f"({busiest.target}, {busiest.connections} connection{'s' if busiest.connections > 1 else ''})")
    others = sorted(run.other_cores for run in runs)
    print(f"       other processes on the machine during the runs: {others[0]:.2f} to {others[-1]:.2f} cores "
          f"(median {others[len(others) // 2]:.2f}) of {os.cpu_count()}")
    print()
    print("memory:")
    print("\n".join(memory_lines(bench)))
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": [asdict(run) for run in runs],
                                         "figures": [asdict(item) for item in all_figures]}, indent=1))


def run_all(args: argparse.Namespace, connection_counts: Sequence[int], names: Sequence[str]) -> list[Run]:
    """Start everything, measure, print the report, stop everything (also on an exception); the runs."""
    workdir = Path(tempfile.mkdtemp(prefix="refunds-bench-"))
    try:
        runs = _run_in(workdir, args, connection_counts, names)
    except (KeyboardInterrupt, SystemExit):
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    except Exception:
        print(f"make bench: the logs and databases of this run are kept in {workdir}", file=sys.stderr)
        raise
    if all(run.valid for run in runs):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"make bench: a run was invalid; the logs of this run are kept in {workdir}", file=sys.stderr)
    return runs


def _run_in(workdir: Path, args: argparse.Namespace, connection_counts: Sequence[int],
            names: Sequence[str]) -> list[Run]:
    with ExitStack() as stack:
        databases = stack.enter_context(scratch_databases(args.database_url, workdir, names))
        processes = Processes()
        stack.callback(processes.stop_all)
        bench = start_all(args, processes, workdir, databases)
        warm_up(bench, max(connection_counts), args.warmup)
        standin_lines = [measure_standin(bench, connections, args.standin_duration)
                         for connections in connection_counts if args.standin_duration > 0]
        print()
        runs = measure_interleaved(bench, connection_counts, args.repetitions, args.duration)
        top_up(bench, bench.targets[SERVICE], args.rss_after, runs, budget=100.0)
        print_summary(args, bench, runs, standin_lines)
        return runs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark and print its report; returns the exit status (see the module's docstring)."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("make bench needs wrk on PATH: `apt-get install -y wrk` (Debian, Ubuntu) or `brew install wrk`.",
              file=sys.stderr)
        return 2
    connection_counts = [int(value) for value in args.connections.split(",")]

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where a shell started us ignoring it
    names = [SERVICE] + ([SERVICE_SLACK] if args.slack_delay is not None else [])
    slow_slack = "" if args.slack_delay is None else f"; {SERVICE_SLACK}: Slack answers after {args.slack_delay:g} s"
    print(f"make bench: {args.workers} {args.worker_class} gunicorn workers per app, "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}, Slack unset (log only){slow_slack}")
    print(f"machine: {os.cpu_count()} cores; load average {load_average()} at start; "
          f"{shutil.which('wrk')}, {args.repetitions} x {args.duration:g} s per figure, interleaved; medians")
    started = time.monotonic()
    try:
        runs = run_all(args, connection_counts, names)
    except SetupError as exc:
        print(f"make bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("make bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(f"\nload average {load_average()} at the end; {time.monotonic() - started:.0f} s in all")
    return 0 if runs and all(run.valid for run in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
