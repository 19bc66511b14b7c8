"""Contracts of release analysis: the canary judge's configuration and judgment, and the
Argo-style measurements a health report carries.

They live here, not beside the judge, because a `HealthReport` carries them through the
workflow's history and the status: those must validate without numpy or scipy.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from relman.contracts.base import Comment, Model, Verdict

MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
"""A metric's name in a catalog, a judgment or a measurement (no spaces: it heads a table)."""
GroupName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")]


class Direction(StrEnum):
    INCREASE_IS_BAD = "increase_is_bad"
    """Errors, latency: only a significant increase fails the metric."""
    DECREASE_IS_BAD = "decrease_is_bad"
    """Throughput, success rate: only a significant decrease fails the metric."""
    EITHER = "either"
    """Any significant change fails the metric."""


class Classification(StrEnum):
    PASS = "pass"
    HIGH = "high"
    LOW = "low"
    NO_DATA = "no_data"


class MetricSpec(Model):
    """How one metric is judged."""

    name: MetricName
    """The metric's name, the key of its samples."""
    group: GroupName = "default"
    """The group whose weight the metric shares."""
    direction: Direction = Direction.INCREASE_IS_BAD
    """Which change is harmful."""
    critical: bool = False
    """A critical metric classified `high` or `low` fails the whole judgment."""
    tolerance: float | None = Field(default=None, ge=0, lt=1)
    """Overrides the judge's tolerance band for this metric."""


class JudgeConfig(Model):
    """The judge's parameters and the metrics it judges."""

    metrics: list[MetricSpec] = Field(min_length=1, max_length=20)
    """The metrics, each named once."""
    confidence: float = Field(default=0.99, gt=0, lt=1)
    """A change is significant when the test's p-value is below 1 - confidence. 0.99, not
    Kayenta's 0.95: each metric is tested on its own, and at 0.95 three metrics of identical
    versions failed about one judgment in eight on chance alone (README: measured rates)."""
    tolerance: float = Field(default=0.25, ge=0, lt=1)
    """A ratio new/old within 1 +- tolerance counts as no change, significant or not. 0.25,
    Kayenta's own effect bound: at 0.10 a p95 latency of identical versions drifting with the
    machine's load failed about one 10 s window in forty."""
    effect: Literal["mean", "median"] = "mean"
    """The statistic whose ratio is compared with the tolerance band."""
    min_samples: int = Field(default=10, ge=3)
    """Fewer samples than this on either side make the metric `no_data`."""
    pass_threshold: float = Field(default=95.0, ge=0, le=100)
    """A score at or above this passes."""
    marginal_threshold: float = Field(default=75.0, ge=0, le=100)
    """A score at or above this (and below the pass threshold) is marginal."""
    group_weights: dict[GroupName, float] = Field(default_factory=dict)
    """Relative weight of each group (> 0); groups not listed weigh 1."""

    @model_validator(mode="after")
    def _consistent(self) -> JudgeConfig:
        if self.marginal_threshold > self.pass_threshold:
            raise ValueError(
                f"marginal_threshold {self.marginal_threshold} is above pass_threshold {self.pass_threshold}"
            )
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metrics named more than once: {', '.join(duplicates)}")
        bad = sorted(g for g, w in self.group_weights.items() if not (w > 0 and math.isfinite(w)))
        if bad:
            raise ValueError(f"group weights must be positive numbers: {', '.join(bad)}")
        return self

    def weight_of(self, group: str) -> float:
        return self.group_weights.get(group, 1.0)


class MetricResult(Model):
    """One row of the judgment's table."""

    name: MetricName
    group: GroupName
    direction: Direction
    critical: bool
    n_new: int = Field(ge=0)
    n_old: int = Field(ge=0)
    median_new: float | None
    median_old: float | None
    ratio: float | None
    """The new variant's mean (or median) over the old one's; None without data (an infinite
    ratio, from an old value of 0, is kept in the history as None too: JSON has no inf)."""
    p_value: float | None
    """The Mann-Whitney U p-value (one-sided in the harmful direction, two-sided for `either`)."""
    classification: Classification
    weight: float
    """Points of the 0-100 score this metric carries (0 without data)."""


class Judgment(Model):
    """The verdict of one comparison of the new variant with the previous one."""

    verdict: Verdict
    score: float = Field(ge=0, le=100)
    """Weighted share of passing metrics among those with data, 0-100."""
    reason: Comment
    metrics: list[MetricResult] = Field(max_length=20)

    def table_text(self) -> str:
        """One line per metric, for approvers, after a header and the verdict line."""
        header = (
            f"{'metric':<24} {'group':<12} {'n new/old':>11} {'median new':>11} {'median old':>11} "
            f"{'ratio':>7} {'p':>8} {'weight':>6}  result"
        )
        lines = [f"verdict {self.verdict.value} (score {self.score:.1f}): {self.reason}", header]
        for m in self.metrics:
            result = m.classification.value + (" CRITICAL" if m.critical else "")
            lines.append(
                f"{m.name[:24]:<24} {m.group[:12]:<12} {f'{m.n_new}/{m.n_old}':>11} "
                f"{fmt(m.median_new):>11} {fmt(m.median_old):>11} {fmt(m.ratio, '.3f'):>7} "
                f"{fmt(m.p_value, '.2g'):>8} {m.weight:>6.1f}  {result}"
            )
        return "\n".join(lines)

    def summary(self, limit: int = 600) -> str:
        """The table on one line, within `limit` characters: notifications take one line.

        A row reads `name result ratio p`; rows that do not fit are counted, failures first.
        """
        head = f"canary {self.verdict.value} (score {self.score:.0f}): {self.reason}"
        order = sorted(self.metrics, key=lambda m: m.classification is Classification.PASS)
        rows = [
            f"{m.name} {m.classification.value}{'!' if m.critical else ''} "
            f"x{fmt(m.ratio, '.2f')} p={fmt(m.p_value, '.2g')}"
            for m in order
        ]
        text = head[: limit - 16]
        for i, row in enumerate(rows):
            rest = len(rows) - i - 1
            tail = f"; +{rest} more" if rest else ""
            if len(text) + 2 + len(row) + len(tail) > limit:
                return f"{text}; +{rest + 1} more"
            text += ("; " if i else " | ") + row
        return text


class Measurement(Model):
    """One Argo-style measurement: a metric's value at one of the analysis' `count` runs."""

    metric: MetricName
    index: int = Field(ge=0)
    """Which run of the analysis (0 = first)."""
    value: float | None
    """The query's value; None when it returned no series (or no finite value)."""
    verdict: Verdict
    """pass (success condition met), fail (failure condition met), marginal (inconclusive:
    neither) or no_data."""


def fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)
