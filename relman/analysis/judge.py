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
  Here: scipy's `mannwhitneyu` (at 0.99 by default, see `JudgeConfig.confidence`), one-sided
  in the harmful direction (two-sided for `either`),
  and a change counts only if it is significant *and* the ratio of the new variant's
  mean (or median) to the old one's lies outside a tolerance band (default +-25 %): an
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

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu

from relman.contracts import Verdict
from relman.contracts.analysis import (
    Classification,
    Direction,
    JudgeConfig,
    Judgment,
    MetricResult,
    MetricSpec,
)

__all__ = [
    "Classification",
    "Direction",
    "JudgeConfig",
    "Judgment",
    "MetricResult",
    "MetricSpec",
    "Samples",
    "classify",
    "judge",
]

Samples = Sequence[float] | npt.NDArray[np.floating]
"""A metric's values over the window: a list of numbers or a numpy array."""


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
    # Twenty long metric names can outgrow a one-line reason: the table names them all anyway.
    return Judgment(verdict=verdict, score=score, reason=reason[:1000], metrics=rows)
