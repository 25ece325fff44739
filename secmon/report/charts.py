"""The report's charts: matplotlib figures -> SVG text, without a display or a browser. Pure.

Figures are built on `matplotlib.figure.Figure` (no pyplot: no global state, safe in
a scheduler thread). Text becomes paths (`svg.fonttype: path`), so a chart looks
the same in a browser, in WeasyPrint's PDF and in an email client, whatever fonts
they have; the hash salt and an empty date make the same numbers give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from datetime import date, datetime
from functools import wraps
from typing import Any, ParamSpec

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Severity colours, lowest first (also the legend order); no other colour in the report uses them.
SEVERITY_COLOURS = ("#9e9e9e", "#4575b4", "#e6ab02", "#f46d43", "#a50026")
BAR = "#3b6ea8"
PREVIOUS = "#b8c7db"
COVERED, GAP = "#1a9850", "#d73027"
FONT = ["DejaVu Sans"]  # has every Vietnamese letter; ships with matplotlib

STYLE: dict[str, Any] = {"svg.fonttype": "path", "svg.hashsalt": "secmon", "font.family": FONT, "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False}
P = ParamSpec("P")


def _styled(chart: Callable[P, str]) -> Callable[P, str]:
    """Our style for this chart only (matplotlib's global settings stay as they were)."""
    @wraps(chart)
    def styled(*args: P.args, **kwargs: P.kwargs) -> str:
        with rc_context(STYLE):  # type: ignore[arg-type]  # the stubs list every key as a Literal
            return chart(*args, **kwargs)
    return styled


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


@_styled
def daily(per_day: Sequence[tuple[date, Sequence[int]]], labels: Sequence[str], title: str) -> str:
    """Incidents per day, stacked by severity (labels: the severity names, lowest first)."""
    figure = Figure(figsize=(7.2, 2.6))
    axes = figure.add_subplot()
    days = [d.day for d, _ in per_day]
    bottom = [0] * len(per_day)
    for level, (label, colour) in enumerate(zip(labels, SEVERITY_COLOURS)):
        heights = [counts[level] for _, counts in per_day]
        if any(heights):
            axes.bar(days, heights, bottom=bottom, color=colour, label=label, width=0.8)
            bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set_xticks(days[::2] if len(days) > 16 else days)
    axes.set_xlim(0.3, len(days) + 0.7)
    axes.set_title(title, loc="left")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    if any(bottom):
        axes.legend(loc="upper left", frameon=False, ncols=5)
        axes.set_ylim(0, max(bottom) * 1.3)
    return _svg(figure)


@_styled
def ranked(rows: Sequence[tuple[str, int]], title: str, width: float = 7.2) -> str:
    """A horizontal bar per row, largest on top (labels cut to 48 characters)."""
    figure = Figure(figsize=(width, 0.4 + 0.28 * max(1, len(rows))))
    axes = figure.add_subplot()
    labels = [label if len(label) <= 48 else label[:47] + "…" for label, _ in rows][::-1]
    values = [value for _, value in rows][::-1]
    axes.barh(range(len(values)), values, color=BAR, height=0.6)
    axes.set_yticks(range(len(values)), labels)
    for y, value in enumerate(values):
        axes.annotate(f"{value:,}", (value, y), xytext=(3, 0), textcoords="offset points", va="center")
    axes.set_title(title, loc="left")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(0, max(values, default=1) * 1.15 or 1)
    return _svg(figure)


@_styled
def compared(labels: Sequence[str], now: Sequence[int], before: Sequence[int], names: tuple[str, str],
             title: str) -> str:
    """This month against the month before, side by side per label."""
    figure = Figure(figsize=(7.2, 2.4))
    axes = figure.add_subplot()
    xs = range(len(labels))
    axes.bar([x - 0.2 for x in xs], before, width=0.4, color=PREVIOUS, label=names[1])
    axes.bar([x + 0.2 for x in xs], now, width=0.4, color=BAR, label=names[0])
    axes.set_xticks(list(xs), labels)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title, loc="left")
    axes.legend(loc="upper left", frameon=False)
    axes.set_ylim(0, max([*now, *before, 1]) * 1.3)
    return _svg(figure)


@_styled
def coverage(start: datetime, end: datetime, covered: Sequence[tuple[datetime, datetime]],
             names: tuple[str, str], title: str) -> str:
    """A strip over the month: scanned time in green, gaps in red."""
    figure = Figure(figsize=(7.2, 1.1))
    axes = figure.add_subplot()
    total = (end - start).total_seconds()
    days = total / 86400

    def at(moment: datetime) -> float:
        return (moment - start).total_seconds() / 86400

    axes.broken_barh([(0, days)], (0, 1), color=GAP, label=names[1])
    if covered:
        axes.broken_barh([(at(low), at(high) - at(low)) for low, high in covered], (0, 1), color=COVERED,
                         label=names[0])
    axes.set_xlim(0, days)
    axes.set_yticks([])
    axes.set_xticks([d + 0.5 for d in range(0, int(days), 2)], [str(d + 1) for d in range(0, int(days), 2)])
    axes.spines["left"].set_visible(False)
    axes.set_title(title, loc="left")
    axes.legend(loc="lower right", bbox_to_anchor=(1, 1), frameon=False, ncols=2, borderaxespad=0.2)
    return _svg(figure)
