"""The processes `make bench` starts, and what it reads about them from /proc (Linux only).

Every child runs in its own session (so one signal ends it with all its children) and is told by
the kernel to end when the benchmark process dies, however it dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


class SetupError(Exception):
    """Something the benchmark needs could not be started; the message says what and where its log is."""


def _die_with_parent() -> None:
    """In a child, before exec: the kernel sends SIGTERM to it when the benchmark process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Processes:
    """Every process the benchmark started; `stop_all` ends each one's whole process group."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path, *,
              stdout_pipe: bool = False) -> Child:
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log_file, stderr=log_file,
                start_new_session=True, preexec_fn=_die_with_parent,  # no threads yet: safe
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait(timeout=5)
            if child.process.stdout is not None:
                child.process.stdout.close()
        self.children.clear()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # its own session: the group id is its pid
    except ProcessLookupError:
        pass


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready_line(child: Child, timeout: float = 30.0) -> dict[str, Any]:
    """The JSON of the child's `READY {...}` line. Raises SetupError if it exits or stays silent."""
    assert child.process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([child.process.stdout], [], [], 0.2)
        if readable:
            line = child.process.stdout.readline().decode()
            if line.startswith("READY "):
                ready: dict[str, Any] = json.loads(line[len("READY "):])
                return ready
        if child.process.poll() is not None:
            break
    raise SetupError(f"{child.name} did not start; its log ({child.log}) ends:\n{tail(child.log)}")


def wait_http(child: Child, url: str, timeout: float = 60.0) -> None:
    """Return once `url` answers anything over HTTP. Raises SetupError if the child exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SetupError(f"{child.name} does not answer at {url}; its log ({child.log}) ends:\n{tail(child.log)}")


# -- /proc ------------------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (gunicorn's master and its workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.extend(process_tree(int(child)))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds the processes have spent so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (VmRSS)."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, busy in processes, total) CPU time of the whole machine, from /proc/stat.

    "In processes" is user, nice and system time: what processes' own counters add up to, without
    interrupts (loopback traffic is partly handled there, and charged to no process)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, values[0] + values[1] + values[2], total


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def run_keeping_logs(name: str, run: Callable[[Path], bool]) -> int:
    """Run `run` in a new scratch directory and return the exit status: 0 valid, 1 invalid (the directory,
    with every process's log, is kept and named), 2 when something could not start."""
    workdir = Path(tempfile.mkdtemp(prefix=f"refunds-{name}-"))
    try:
        valid = run(workdir)
    except SetupError as exc:
        print(f"bench.{name}: {exc}", file=sys.stderr)
        return 2
    if valid:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"bench.{name}: the logs are kept in {workdir}", file=sys.stderr)
    return 0 if valid else 1


def cores_busy(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """How many cores the whole machine kept busy on average between two `machine_jiffies()` samples."""
    spent = after[2] - before[2]
    return (after[0] - before[0]) / spent * (os.cpu_count() or 1) if spent else 0.0
