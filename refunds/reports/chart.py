"""The report page's chart as geometry for an inline SVG: one stacked bar per day, one segment per path.

Pure: no Flask, no SQL. The template draws what `bar_chart` returns, so the page needs no JavaScript
and no charting library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import PATHS
from .page import DayCounts

__all__ = ["COLORS", "HEIGHT", "WIDTH", "Bar", "Chart", "Segment", "bar_chart"]

WIDTH, HEIGHT = 600, 220
_TOP, _BOTTOM, _LEFT = 10, 20, 30  # room for the scale on the left and the dates underneath
COLORS = {"auto_approved": "#1a7f37", "approved": "#0969da", "rejected": "#9a6700", "expired": "#8c959f",
          "failed": "#cf222e", "external": "#8250df"}


@dataclass(frozen=True)
class Segment:
    path: str
    count: int
    y: float
    height: float
    color: str


@dataclass(frozen=True)
class Bar:
    day: str  # ISO date
    total: int
    x: float
    width: float
    segments: list[Segment]


@dataclass(frozen=True)
class Chart:
    """Bars left to right, oldest first; `peak` is the scale's top (at least 1)."""

    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = _LEFT
    top: int = _TOP
    baseline: int = HEIGHT - _BOTTOM


def bar_chart(series: Sequence[DayCounts]) -> Chart:
    """A stacked bar per day of `series`, paths in `PATHS` order from the bottom; empty days have no segment."""
    peak = max((d.total for d in series), default=0) or 1
    plot_height = HEIGHT - _TOP - _BOTTOM
    step = (WIDTH - _LEFT) / max(len(series), 1)
    bars = []
    for n, day in enumerate(series):
        y = float(HEIGHT - _BOTTOM)
        segments = []
        for path in (*PATHS, *sorted(set(day.counts) - set(PATHS))):
            count = day.counts.get(path, 0)
            if count:
                height = count / peak * plot_height
                y -= height
                segments.append(Segment(path, count, round(y, 2), round(height, 2), COLORS.get(path, "#57606a")))
        bars.append(Bar(day.day.isoformat(), day.total, round(_LEFT + n * step + step * 0.1, 2),
                        round(step * 0.8, 2), segments))
    return Chart(bars=bars, peak=peak)
