"""A statistical canary judge in the manner of Kayenta, comparing a release's two variants.

For each metric the new variant's samples are compared with the previous variant's over the
same window (so no extra baseline replicas are needed), then the metrics are scored and the
judgment gets one `Verdict`. Pure functions: plain inputs, pydantic models, no I/O.

What Kayenta (spinnaker/kayenta, `kayenta-judge`) does, and where this judge differs:

- Kayenta's `MannWhitneyClassifier` runs a Mann-Whitney U test (Wilcoxon rank-sum, via R)
  of experiment against control at `confLevel` (0.95) and classifies from the confidence
  interval of the Hodges-Lehmann shift: `High` when the interval's lower end is above a
  bound, `Low` when its upper end is below it, the bound being `fraction` (0.25) of the
  estimate; a direction (`increase`, `decrease`, `either`) restricts which of the two counts.
  Here: scipy's `mannwhitneyu`, one-sided in the harmful direction (two-sided for `either`),
  and a change counts only if it is significant *and* the ratio of the new variant's
  mean (or median) to the old one's lies outside a tolerance band (default +-10 %): an
  explicit effect-size band that approvers can read, instead of the Hodges-Lehmann fraction.
- Kayenta gives `Nodata` to a metric with no values on either side. Here a metric with fewer
  than `min_samples` values on either side is `no_data`, and half or more of the metrics
  without data give an overall `NO_DATA` (the peers' "no data on half the metrics" rule).
- Kayenta's `WeightedSumScorer` scores each group as the share of its `Pass` metrics among
  those with data, sums group scores times group weights (percentages; groups without a weight
  share what is left of 100), and drops groups without data without renormalising. Here group
  weights are relative (any positive numbers, default 1) and are renormalised over the groups
  that have data, so a silent group does not lower the score; each metric's share of the score
  is shown in the table as its `weight` (points out of 100).
- Kayenta sets the score to 0 when a critical metric is not `Pass` (no data included). Here a
  critical metric classified `high` or `low` fails the judgment but the score is kept, so
  approvers see that it was otherwise good; a critical metric without data gives `NO_DATA`
  (the judge cannot vouch for it) rather than a failure.
- Kayenta's score thresholds (`pass`, `marginal`) are the same: score >= pass is PASS,
  >= marginal is MARGINAL, below is FAIL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator
from scipy.stats import mannwhitneyu

from relman.contracts import Model, Verdict

Samples = Sequence[float] | npt.NDArray[np.floating]
"""A metric's values over the window: a list of numbers or a numpy array."""


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

    name: str = Field(min_length=1, max_length=128)
    """The metric's name, the key of its samples."""
    group: str = Field(default="default", min_length=1, max_length=64)
    """The group whose weight the metric shares."""
    direction: Direction = Direction.INCREASE_IS_BAD
    """Which change is harmful."""
    critical: bool = False
    """A critical metric classified `high` or `low` fails the whole judgment."""
    tolerance: float | None = Field(default=None, ge=0, lt=1)
    """Overrides the judge's tolerance band for this metric."""


class JudgeConfig(Model):
    """The judge's parameters and the metrics it judges."""

    metrics: list[MetricSpec] = Field(min_length=1)
    """The metrics, each named once."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """A change is significant when the test's p-value is below 1 - confidence."""
    tolerance: float = Field(default=0.10, ge=0, lt=1)
    """A ratio new/old within 1 +- tolerance counts as no change, significant or not."""
    effect: Literal["mean", "median"] = "mean"
    """The statistic whose ratio is compared with the tolerance band."""
    min_samples: int = Field(default=10, ge=3)
    """Fewer samples than this on either side make the metric `no_data`."""
    pass_threshold: float = Field(default=95.0, ge=0, le=100)
    """A score at or above this passes."""
    marginal_threshold: float = Field(default=75.0, ge=0, le=100)
    """A score at or above this (and below the pass threshold) is marginal."""
    group_weights: dict[str, float] = Field(default_factory=dict)
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

    name: str
    group: str
    direction: Direction
    critical: bool
    n_new: int
    n_old: int
    median_new: float | None
    median_old: float | None
    ratio: float | None
    """The new variant's mean (or median) over the old one's; None without data."""
    p_value: float | None
    """The Mann-Whitney U p-value (one-sided in the harmful direction, two-sided for `either`)."""
    classification: Classification
    weight: float
    """Points of the 0-100 score this metric carries (0 without data)."""


class Judgment(Model):
    """The verdict of one comparison of the new variant with the previous one."""

    verdict: Verdict
    score: float
    """Weighted share of passing metrics among those with data, 0-100."""
    reason: str
    metrics: list[MetricResult]

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
                f"{_fmt(m.median_new):>11} {_fmt(m.median_old):>11} {_fmt(m.ratio, '.3f'):>7} "
                f"{_fmt(m.p_value, '.2g'):>8} {m.weight:>6.1f}  {result}"
            )
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _ratio(new: float, old: float) -> float:
    if old == 0:
        return 1.0 if new == 0 else math.copysign(math.inf, new)
    return new / old


def classify(spec: MetricSpec, new: Samples, old: Samples, config: JudgeConfig) -> MetricResult:
    """Classify one metric from its samples of the new and the previous variant (weight 0)."""
    a = np.asarray(new, dtype=float)
    b = np.asarray(old, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    row = {
        "name": spec.name,
        "group": spec.group,
        "direction": spec.direction,
        "critical": spec.critical,
        "n_new": int(a.size),
        "n_old": int(b.size),
        "weight": 0.0,
    }
    if a.size < config.min_samples or b.size < config.min_samples:
        return MetricResult(
            **row,
            median_new=float(np.median(a)) if a.size else None,
            median_old=float(np.median(b)) if b.size else None,
            ratio=None,
            p_value=None,
            classification=Classification.NO_DATA,
        )
    stat = np.mean if config.effect == "mean" else np.median
    ratio = _ratio(float(stat(a)), float(stat(b)))
    alternative = {
        Direction.INCREASE_IS_BAD: "greater",
        Direction.DECREASE_IS_BAD: "less",
        Direction.EITHER: "two-sided",
    }[spec.direction]
    p = float(mannwhitneyu(a, b, alternative=alternative).pvalue)
    if math.isnan(p):  # every value tied: no evidence of a change
        p = 1.0
    tolerance = config.tolerance if spec.tolerance is None else spec.tolerance
    significant = p < 1 - config.confidence
    classification = Classification.PASS
    if significant and ratio > 1 + tolerance and spec.direction != Direction.DECREASE_IS_BAD:
        classification = Classification.HIGH
    elif significant and ratio < 1 - tolerance and spec.direction != Direction.INCREASE_IS_BAD:
        classification = Classification.LOW
    return MetricResult(
        **row,
        median_new=float(np.median(a)),
        median_old=float(np.median(b)),
        ratio=ratio,
        p_value=p,
        classification=classification,
    )


def judge(
    config: JudgeConfig,
    new: Mapping[str, Samples],
    old: Mapping[str, Samples],
) -> Judgment:
    """Judge the new variant's samples against the previous variant's, metric by metric.

    `new` and `old` map metric names to samples over the same window; a metric missing
    from either is `no_data`.
    """
    rows = [classify(spec, new.get(spec.name, ()), old.get(spec.name, ()), config) for spec in config.metrics]
    with_data = [r for r in rows if r.classification != Classification.NO_DATA]

    groups = {r.group for r in with_data}
    total = sum(config.weight_of(g) for g in groups)
    per_group = {g: sum(1 for r in with_data if r.group == g) for g in groups}
    rows = [
        r
        if r.classification == Classification.NO_DATA
        else r.model_copy(update={"weight": 100.0 * config.weight_of(r.group) / total / per_group[r.group]})
        for r in rows
    ]
    score = sum(r.weight for r in rows if r.classification == Classification.PASS)
    score = round(min(score, 100.0), 6)

    no_data = [r.name for r in rows if r.classification == Classification.NO_DATA]
    failed = [r.name for r in rows if r.classification in (Classification.HIGH, Classification.LOW)]
    critical_failed = [r.name for r in rows if r.critical and r.name in failed]
    critical_no_data = [r.name for r in rows if r.critical and r.name in no_data]

    if 2 * len(no_data) >= len(rows):
        verdict, reason = Verdict.NO_DATA, f"{len(no_data)} of {len(rows)} metrics without enough samples"
    elif critical_failed:
        verdict, reason = Verdict.FAIL, f"critical metric failed: {', '.join(critical_failed)}"
    elif critical_no_data:
        verdict, reason = Verdict.NO_DATA, f"critical metric without data: {', '.join(critical_no_data)}"
    elif score >= config.pass_threshold:
        verdict, reason = Verdict.PASS, f"score >= pass threshold {config.pass_threshold:g}"
    elif score >= config.marginal_threshold:
        verdict, reason = Verdict.MARGINAL, f"score below pass threshold {config.pass_threshold:g}"
    else:
        verdict, reason = Verdict.FAIL, f"score below marginal threshold {config.marginal_threshold:g}"
    if failed and verdict != Verdict.NO_DATA and not critical_failed:
        reason += f"; failed: {', '.join(failed)}"
    return Judgment(verdict=verdict, score=score, reason=reason, metrics=rows)
