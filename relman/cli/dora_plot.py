"""The `relman metrics --plot` figure: deployments per day as stacked bars (successful,
then failed on top, never below zero) and the daily medians of lead and recovery time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from relman.cmdb.dora import DoraMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def metrics_figure(m: DoraMetrics) -> Figure:
    """The figure, not yet saved (tests read its bars and ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    days = [d.day for d in m.series]
    successful = [d.successful for d in m.series]
    fig = Figure(figsize=(9, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(days, successful, label="successful deployments", color="tab:green")
    top.bar(
        days, [d.failures for d in m.series], bottom=successful, label="failed deployments", color="tab:red"
    )
    top.set_ylim(bottom=0, top=max([d.deployments for d in m.series] + [1]) + 0.5)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.set_ylabel("deployments per day")
    top.legend(loc="upper left")
    top.set_title("relman DORA metrics" + (f" — {m.service}" if m.service else ""))
    lead = [(d.day, d.lead_time_hours) for d in m.series if d.lead_time_hours is not None]
    rec = [(d.day, d.recovery_hours) for d in m.series if d.recovery_hours is not None]
    if lead:
        bottom.plot(*zip(*lead, strict=True), marker="o", label="lead time (h)")
    if rec:
        bottom.plot(*zip(*rec, strict=True), marker="x", label="recovery time (h)")
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("hours (median)")
    if lead or rec:
        bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def draw_metrics(m: DoraMetrics, path: Path) -> None:
    """Write the figure as a PNG (Agg backend, no display)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics_figure(m).savefig(path, dpi=100)
