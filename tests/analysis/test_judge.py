"""The statistical canary judge on deterministic samples from numpy's seeded Generator."""

import numpy as np
import numpy.typing as npt
import pytest

from relman.analysis.judge import Classification, JudgeConfig, MetricSpec, judge
from relman.contracts import Verdict
from relman.errors import ContractError

N = 200


def rng(seed: int = 12) -> np.random.Generator:
    return np.random.default_rng(seed)


def error_rates(g: np.random.Generator, rate: float, n: int = N) -> npt.NDArray[np.float64]:
    """Per-interval error rates: errors among 1000 requests."""
    return g.binomial(1000, rate, n) / 1000


def latency(g: np.random.Generator, median_ms: float, n: int = N) -> npt.NDArray[np.float64]:
    return g.lognormal(np.log(median_ms), 0.3, n)


def config(*metrics: MetricSpec, **kwargs: object) -> JudgeConfig:
    return JudgeConfig(metrics=list(metrics), **kwargs)


def test_identical_distributions_pass() -> None:
    g = rng()
    cfg = config(MetricSpec(name="errors", group="errors"), MetricSpec(name="latency", group="latency"))
    new = {"errors": error_rates(g, 0.01), "latency": latency(g, 100)}
    old = {"errors": error_rates(g, 0.01), "latency": latency(g, 100)}
    j = judge(cfg, new, old)
    assert j.verdict == Verdict.PASS
    assert j.score == 100.0
    assert [m.classification for m in j.metrics] == [Classification.PASS] * 2
    assert all(m.n_new == N and m.n_old == N and m.p_value is not None for m in j.metrics)


def test_higher_error_rate_fails_lower_passes() -> None:
    g = rng()
    cfg = config(MetricSpec(name="errors"))
    old = {"errors": error_rates(g, 0.01)}
    worse = judge(cfg, {"errors": error_rates(g, 0.03)}, old)
    assert worse.metrics[0].classification == Classification.HIGH
    assert worse.metrics[0].p_value is not None and worse.metrics[0].p_value < 0.05
    assert worse.verdict == Verdict.FAIL and worse.score == 0.0
    better = judge(cfg, {"errors": error_rates(g, 0.003)}, old)
    assert better.metrics[0].classification == Classification.PASS
    assert better.metrics[0].ratio is not None and better.metrics[0].ratio < 0.5
    assert better.verdict == Verdict.PASS


def test_decrease_is_bad_and_either() -> None:
    g = rng()
    old, new = g.normal(100, 5, N), g.normal(70, 5, N)
    assert (
        judge(config(MetricSpec(name="rps", direction="decrease_is_bad")), {"rps": new}, {"rps": old})
        .metrics[0]
        .classification
        == Classification.LOW
    )
    assert (
        judge(config(MetricSpec(name="rps", direction="either")), {"rps": old}, {"rps": new})
        .metrics[0]
        .classification
        == Classification.HIGH
    )
    assert (
        judge(config(MetricSpec(name="rps", direction="decrease_is_bad")), {"rps": old}, {"rps": new})
        .metrics[0]
        .classification
        == Classification.PASS
    )


def test_significant_change_within_tolerance_passes() -> None:
    g = rng()
    old, new = latency(g, 100, 5000), latency(g, 104, 5000)
    cfg = config(MetricSpec(name="latency"))
    j = judge(cfg, {"latency": new}, {"latency": old})
    row = j.metrics[0]
    assert row.p_value is not None and row.p_value < 1e-6, "the 4 % shift is significant"
    assert row.ratio is not None and 1.0 < row.ratio < 1.1
    assert row.classification == Classification.PASS and j.verdict == Verdict.PASS
    strict = config(MetricSpec(name="latency", tolerance=0.01))
    assert judge(strict, {"latency": new}, {"latency": old}).metrics[0].classification == Classification.HIGH


def test_critical_failure_fails_despite_high_score() -> None:
    g = rng()
    specs = [MetricSpec(name=f"m{i}") for i in range(19)] + [MetricSpec(name="errors", critical=True)]
    new = {f"m{i}": latency(g, 100) for i in range(19)} | {"errors": error_rates(g, 0.05)}
    old = {f"m{i}": latency(g, 100) for i in range(19)} | {"errors": error_rates(g, 0.01)}
    j = judge(config(*specs), new, old)
    assert j.score == pytest.approx(95.0)
    assert j.verdict == Verdict.FAIL
    assert "critical metric failed: errors" in j.reason
    not_critical = judge(config(*specs[:-1], MetricSpec(name="errors")), new, old)
    assert not_critical.verdict == Verdict.PASS


def test_group_weights_move_the_score() -> None:
    g = rng()
    cfg = config(
        MetricSpec(name="errors", group="errors"),
        MetricSpec(name="p50", group="latency"),
        MetricSpec(name="p95", group="latency"),
        group_weights={"errors": 3.0},  # latency weighs 1 by default
    )
    old = {"errors": error_rates(g, 0.01), "p50": latency(g, 100), "p95": latency(g, 300)}
    bad_errors = {"errors": error_rates(g, 0.05), "p50": latency(g, 100), "p95": latency(g, 300)}
    bad_p95 = {"errors": error_rates(g, 0.01), "p50": latency(g, 100), "p95": latency(g, 600)}
    # errors carries 3/4 of the score, each latency metric half of the remaining 1/4.
    j = judge(cfg, bad_errors, old)
    assert [m.weight for m in j.metrics] == pytest.approx([75.0, 12.5, 12.5])
    assert j.score == pytest.approx(25.0)
    assert judge(cfg, bad_p95, old).score == pytest.approx(75.0 + 12.5)
    unweighted = cfg.model_copy(update={"group_weights": {}})
    # groups weigh 1 each: errors 50, each latency metric 25.
    assert judge(unweighted, bad_errors, old).score == pytest.approx(50.0)
    assert judge(unweighted, bad_p95, old).score == pytest.approx(75.0)


def test_half_the_metrics_without_data_is_no_data() -> None:
    g = rng()
    cfg = config(*(MetricSpec(name=n) for n in ("a", "b", "c", "d")), min_samples=20)
    old = {n: latency(g, 100) for n in "abcd"}
    new = {"a": latency(g, 100), "b": latency(g, 100), "c": latency(g, 100, 5)}  # d missing
    j = judge(cfg, new, old)
    assert j.verdict == Verdict.NO_DATA
    assert [m.classification for m in j.metrics][2:] == [Classification.NO_DATA] * 2
    assert j.metrics[3].n_new == 0 and j.metrics[3].ratio is None
    one_missing = judge(cfg, new | {"c": latency(g, 100)}, old)
    assert one_missing.verdict == Verdict.PASS
    assert one_missing.score == pytest.approx(100.0)


def test_critical_metric_without_data_is_no_data() -> None:
    g = rng()
    cfg = config(MetricSpec(name="a"), MetricSpec(name="b"), MetricSpec(name="errors", critical=True))
    old = {"a": latency(g, 100), "b": latency(g, 100), "errors": error_rates(g, 0.01)}
    j = judge(cfg, {"a": latency(g, 100), "b": latency(g, 100)}, old)
    assert j.verdict == Verdict.NO_DATA and "errors" in j.reason


def test_score_between_thresholds_is_marginal() -> None:
    g = rng()
    names = [f"m{i}" for i in range(10)]
    cfg = config(*(MetricSpec(name=n) for n in names))
    old = {n: latency(g, 100) for n in names}
    new = {n: latency(g, 100) for n in names} | {"m0": latency(g, 200)}
    j = judge(cfg, new, old)
    assert j.score == pytest.approx(90.0)
    assert j.verdict == Verdict.MARGINAL
    assert "failed: m0" in j.reason
    new |= {"m1": latency(g, 200), "m2": latency(g, 200)}
    assert judge(cfg, new, old).verdict == Verdict.FAIL


def test_table_text_one_line_per_metric() -> None:
    g = rng()
    cfg = config(MetricSpec(name="errors", critical=True), MetricSpec(name="latency"))
    j = judge(cfg, {"errors": error_rates(g, 0.03)}, {"errors": error_rates(g, 0.01)})
    lines = j.table_text().splitlines()
    assert len(lines) == 2 + 2
    assert lines[0].startswith("verdict no_data")
    assert lines[2].startswith("errors") and lines[2].endswith("high CRITICAL")
    assert lines[3].startswith("latency") and lines[3].endswith("no_data")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.0}, "confidence"),
        ({"pass_threshold": 70, "marginal_threshold": 80}, "marginal_threshold"),
        ({"metrics": [{"name": "x", "direction": "up"}]}, "direction"),
        ({"metrics": [{"name": "x"}, {"name": "x"}]}, "more than once"),
        ({"group_weights": {"errors": 0}}, "group weights"),
    ],
)
def test_bad_config_is_a_one_line_error(kwargs: dict[str, object], words: str) -> None:
    data: dict[str, object] = {"metrics": [{"name": "errors"}]} | kwargs
    with pytest.raises(ContractError) as info:
        JudgeConfig(**data)
    message = str(info.value)
    assert "\n" not in message
    assert words in message


def test_twenty_failing_long_names_keep_a_bounded_reason() -> None:
    g = rng()
    names = [f"{'m' * 60}{i:02d}" for i in range(20)]
    cfg = config(*(MetricSpec(name=n) for n in names))
    j = judge(cfg, {n: latency(g, 300) for n in names}, {n: latency(g, 100) for n in names})
    assert j.verdict == Verdict.FAIL and len(j.reason) <= 1000 and len(j.metrics) == 20
