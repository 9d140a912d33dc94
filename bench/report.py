"""What `make bench` measured, and how it is summed up and printed: plain data, no processes.

A `Run` is one bounded wrk run against one target. It is valid only if every answer was a 200 and
the Stripe stand-in created a refund for every answer (a few more are allowed: requests still at the
server when wrk stopped, which finish without being counted). Figures are medians over a target's
runs at one connection count, and exist only when every one of those runs is valid.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

BASELINE = "baseline"
SERVICE = "service"


@dataclass(frozen=True)
class Run:
    """One wrk run. Times in seconds; `*_cpu` are CPU seconds (user + system) spent during the run."""

    target: str
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    not_ok: int  # answers other than 200, plus connection, read, write errors and timeouts
    refunds: int  # refunds the Stripe stand-in created during the run
    calls: int = 0  # calls the Stripe stand-in received during the run
    app_cpu: float = 0.0
    standin_cpu: float = 0.0
    load_cpu: float = 0.0
    machine_busy: float = 0.0  # share of all cores busy during the run, 0 to 1
    other_cores: float = 0.0  # cores used during the run by processes the benchmark did not start

    @property
    def throughput(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def problems(self) -> list[str]:
        """Why the run is not a figure; empty when it is valid."""
        found = []
        if self.requests == 0:
            found.append("no request completed")
        if self.not_ok:
            found.append(f"{self.not_ok} answers not 200 or failed")
        if self.refunds < self.requests:
            found.append(f"{self.requests - self.refunds} answers without a refund at the stand-in")
        elif self.refunds > self.requests + self.connections:
            found.append(f"{self.refunds - self.requests} more refunds at the stand-in than answers")
        return found

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Figure:
    """The medians of one target's runs at one connection count; None when a run was invalid."""

    target: str
    connections: int
    runs: int
    invalid_runs: int
    throughput: float | None
    p50_ms: float | None
    p99_ms: float | None
    app_cpu_ms_per_request: float | None
    standin_cores: float | None
    calls_per_refund: float | None

    @property
    def valid(self) -> bool:
        return self.invalid_runs == 0 and self.throughput is not None


@dataclass(frozen=True)
class Comparison:
    """A target against the baseline at one connection count."""

    throughput_ratio: float
    p50_difference_ms: float
    p99_difference_ms: float


def figure(target: str, connections: int, runs: Sequence[Run]) -> Figure:
    """The medians of `runs` (all of `target` at `connections`); no figures if any run is invalid."""
    invalid = sum(1 for run in runs if not run.valid)
    if invalid or not runs:
        return Figure(target, connections, len(runs), invalid, None, None, None, None, None, None)
    return Figure(
        target, connections, len(runs), 0,
        throughput=statistics.median(run.throughput for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        app_cpu_ms_per_request=statistics.median(1000 * run.app_cpu / run.requests for run in runs),
        standin_cores=statistics.median(run.standin_cpu / run.seconds for run in runs),
        calls_per_refund=statistics.median(run.calls / run.refunds for run in runs),
    )


def figures(runs: Sequence[Run]) -> list[Figure]:
    """One figure per (connections, target), in order of connections then first appearance."""
    keys: list[tuple[int, str]] = []
    for run in runs:
        if (run.connections, run.target) not in keys:
            keys.append((run.connections, run.target))
    keys.sort(key=lambda key: key[0])
    return [figure(target, connections, [r for r in runs if r.target == target and r.connections == connections])
            for connections, target in keys]


def compare(candidate: Figure, baseline: Figure) -> Comparison | None:
    """`candidate` against `baseline`; None unless both are valid."""
    if not (candidate.valid and baseline.valid):
        return None
    assert candidate.throughput is not None and baseline.throughput is not None
    assert candidate.p50_ms is not None and baseline.p50_ms is not None
    assert candidate.p99_ms is not None and baseline.p99_ms is not None
    return Comparison(
        throughput_ratio=candidate.throughput / baseline.throughput,
        p50_difference_ms=candidate.p50_ms - baseline.p50_ms,
        p99_difference_ms=candidate.p99_ms - baseline.p99_ms,
    )


def _number(value: float | None, digits: int) -> str:
    return "invalid" if value is None else f"{value:,.{digits}f}"


def format_figures(all_figures: Sequence[Figure]) -> str:
    """The table of medians, with each target's ratio to the baseline at the same connection count."""
    lines = [f"{'conns':>5}  {'target':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   {'vs baseline':<34}"
             f"{'app CPU ms/req':>15} {'Stripe calls/refund':>20} {'stand-in cores':>15}"]
    for item in all_figures:
        versus = ""
        if item.target != BASELINE:
            base = next((f for f in all_figures if f.target == BASELINE and f.connections == item.connections), None)
            comparison = compare(item, base) if base is not None else None
            versus = "n/a (a run was invalid)" if comparison is None else (
                f"x{comparison.throughput_ratio:.2f} req/s, p50 {comparison.p50_difference_ms:+.1f} ms")
        note = f"  ({item.invalid_runs} of {item.runs} runs invalid)" if item.invalid_runs else ""
        lines.append(
            f"{item.connections:>5}  {item.target:<14} {_number(item.throughput, 1):>9} {_number(item.p50_ms, 1):>8} "
            f"{_number(item.p99_ms, 1):>8}   {versus:<34}{_number(item.app_cpu_ms_per_request, 2):>15} "
            f"{_number(item.calls_per_refund, 2):>20} {_number(item.standin_cores, 2):>15}{note}"
        )
    return "\n".join(lines)


def format_run(run: Run, repetition: int) -> str:
    """One line per run: its figures, the CPU each process spent, and why it is invalid if it is."""
    verdict = "ok" if run.valid else "INVALID: " + "; ".join(run.problems)
    return (f"{run.connections:>5}  {run.target:<14} #{repetition}  {run.throughput:>8.1f} req/s  "
            f"p50 {run.p50_ms:6.1f} ms  p99 {run.p99_ms:6.1f} ms  {run.requests:>6} answers, {run.refunds:>6} refunds  "
            f"CPU s: app {run.app_cpu:5.2f}, stand-in {run.standin_cpu:5.2f}, wrk {run.load_cpu:5.2f}; "
            f"machine {100 * run.machine_busy:3.0f}% busy, {run.other_cores:.2f} cores by others  {verdict}")


def format_slack_effect(all_figures: Sequence[Figure], slack_target: str) -> list[str]:
    """How far the p50 moved with Slack answering late, per connection count, in percent of the service's."""
    lines = []
    for item in all_figures:
        if item.target != slack_target:
            continue
        plain = next((f for f in all_figures if f.target == SERVICE and f.connections == item.connections), None)
        if plain is None or not (plain.valid and item.valid) or not plain.p50_ms:
            lines.append(f"{item.connections:>5}  p50 with slow Slack: n/a (a run was invalid)")
            continue
        assert item.p50_ms is not None
        change = 100 * (item.p50_ms - plain.p50_ms) / plain.p50_ms
        lines.append(f"{item.connections:>5}  p50 {plain.p50_ms:.1f} ms -> {item.p50_ms:.1f} ms with slow Slack "
                     f"({change:+.1f}%)")
    return lines
