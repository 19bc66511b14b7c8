"""Argo-style counting and the canary's data handling, on scripted Prometheus answers (no server).

The Prometheus server is scripted (`Scripted`), and so is time: `sleep` advances a clock, so
a 3-measurement analysis 10 s apart takes no time and the waits can be counted.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from relman.activities.analysis import Analysis, measure, metric_verdict, worst
from relman.activities.prometheus import Prometheus, PrometheusError, Series, parse_result
from relman.analysis.spec import AnalysisMetric, AnalysisSpec
from relman.contracts import HealthReport, Judgment, Verdict
from relman.devserver import free_port
from relman.workflows import details

P, F, M, N = Verdict.PASS, Verdict.FAIL, Verdict.MARGINAL, Verdict.NO_DATA


class Scripted(Prometheus):
    """Answers each rendered query from a script: instant values in turn, range values once."""

    def __init__(self, instant: dict[str, list[float | Exception | None]], ranges: dict[str, Any]) -> None:
        super().__init__("http://scripted.invalid")
        object.__setattr__(self, "instant", {q: iter(v) for q, v in instant.items()})
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "asked", [])

    def query(self, promql: str, at: float | None = None) -> list[Series]:
        self.asked.append(promql)
        value = next(self.instant[promql])
        if isinstance(value, Exception):
            raise value
        return [] if value is None else [Series({}, [(0.0, value)])]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        self.asked.append(promql)
        values = self.ranges.get(promql)
        if isinstance(values, Exception):
            raise values
        return [] if values is None else [Series({}, [(start + i * step, v) for i, v in enumerate(values)])]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def argo(metrics: list[dict[str, Any]], **kw: Any) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"address": "http://p:9090", "interval": 10, "count": 3, "metrics": metrics} | kw
    )


ERR = {"name": "errors", "query": 'e{v="{variant}"}', "success": "result < 0.02", "failure": "result > 0.05"}


@pytest.mark.parametrize(
    ("metric", "value", "verdict"),
    [
        (ERR, 0.01, P),
        (ERR, 0.06, F),
        (ERR, 0.03, M),  # neither condition: inconclusive
        (ERR, None, N),
        ({**ERR, "failure": None}, 0.03, F),  # success only: not meeting it fails
        ({**ERR, "success": None}, 0.03, P),  # failure only: not meeting it passes
    ],
)
def test_one_measurement(metric: dict[str, Any], value: float | None, verdict: Verdict) -> None:
    assert measure(AnalysisMetric.model_validate(metric), value) is verdict


@pytest.mark.parametrize(
    ("taken", "kw", "verdict"),
    [
        ([P, P], {}, None),  # still measuring
        ([P, P, P], {}, P),
        ([P, F], {}, F),  # failure_limit 0: the first failure decides at once
        ([P, F, P], {"failure_limit": 1}, P),
        ([F, P, F], {"failure_limit": 1}, F),
        ([P, M, P], {}, M),
        ([P, N, P], {}, P),  # one missing scrape is tolerated
        ([N, N, P], {}, N),
        ([N, P], {"count": 2}, N),  # half without data
        ([M, P, P], {"consecutive_success_limit": 2}, P),
        ([P, P], {"consecutive_success_limit": 2}, P),  # early
        ([P, M], {"consecutive_success_limit": 2}, None),
    ],
)
def test_metric_counting(taken: list[Verdict], kw: dict[str, Any], verdict: Verdict | None) -> None:
    args = {"count": 3, "failure_limit": 0} | kw
    assert metric_verdict(taken, **args) is verdict


def test_worst_orders_fail_no_data_marginal_pass() -> None:
    assert worst(P, M) is M and worst(M, N) is N and worst(N, F, P) is F and worst() is P


async def run(spec: AnalysisSpec, client: Scripted, canary: bool = True) -> tuple[Any, Clock]:
    clock = Clock()
    beats: list[Any] = []
    analysis = Analysis(
        spec, {"service": "greeter"}, client=client, sleep=clock.sleep, now=clock.now, heartbeat=beats.append
    )
    result = await analysis.run(canary=canary)
    assert beats or not canary, "the analysis heartbeats"
    return result, clock


async def test_three_passing_measurements_ten_seconds_apart() -> None:
    client = Scripted({'e{v="new"}': [0.0, 0.01, 0.0]}, {})
    result, clock = await run(argo([ERR]), client)
    assert result.verdict is P
    assert [m.value for m in result.measurements] == [0.0, 0.01, 0.0]
    assert sum(clock.slept) == 20 and max(clock.slept) <= 5, "two intervals, heartbeating every 5 s"
    assert "errors pass (3 pass)" in result.detail()


async def test_failures_over_the_limit_fail_and_stop_measuring() -> None:
    client = Scripted({'e{v="new"}': [0.01, 0.2, 0.2, 0.0]}, {})
    result, clock = await run(argo([ERR], count=4, failure_limit=1), client)
    assert result.verdict is F
    assert len(result.measurements) == 3, "the second failure (over the limit of 1) ends it"
    assert sum(clock.slept) == 20


async def test_inconclusive_is_marginal_and_no_series_is_no_data() -> None:
    lat = {"name": "latency", "query": "lat", "success": "result < 0.1"}
    client = Scripted({'e{v="new"}': [0.01, 0.03, 0.01], "lat": [None, None, 0.05]}, {})
    result, _ = await run(argo([ERR, lat]), client)
    assert result.verdict is N, "no_data is worse than marginal"
    assert "errors marginal (2 pass, 1 marginal)" in result.detail()
    assert "latency no_data (1 pass, 2 no_data)" in result.detail()


async def test_consecutive_successes_pass_early() -> None:
    client = Scripted({'e{v="new"}': [0.03, 0.0, 0.0, 0.0, 0.0]}, {})
    result, clock = await run(argo([ERR], count=5, consecutive_success_limit=2), client)
    assert result.verdict is P and len(result.measurements) == 3 and sum(clock.slept) == 20


async def test_an_unreachable_or_refusing_server_is_no_data_with_its_reason() -> None:
    down = PrometheusError("http://p:9090/api/v1/query unreachable: Connection refused")
    client = Scripted({'e{v="new"}': [down, down, down]}, {})
    result, _ = await run(argo([ERR]), client)
    assert result.verdict is N
    assert "Connection refused" in result.detail() and "\n" not in result.detail()


async def test_several_series_are_refused_not_guessed() -> None:
    client = Scripted({}, {})
    object.__setattr__(client, "query", lambda promql, at=None: [Series({"a": "1"}, [(0, 1.0)])] * 2)
    result, _ = await run(argo([ERR], count=1), client)
    assert result.verdict is N and "aggregate it to one" in result.detail()


def canary_spec(**kw: Any) -> AnalysisSpec:
    metrics = [
        {"name": "errors", "query": 'e{v="{variant}"}', "group": "errors"},
        {"name": "p95", "query": 'l{v="{variant}"}', "group": "latency"},
        {"name": "mean", "query": 'm{v="{variant}"}', "group": "latency"},
    ]
    return AnalysisSpec.model_validate(
        {"address": "http://p:9090", "canary": {"metrics": metrics, "lookback": 30, "step": 1} | kw}
    )


def samples(seed: int, centre: float, n: int = 30) -> list[float]:
    return list(np.random.default_rng(seed).normal(centre, centre * 0.05, n))


def ranges(new: dict[str, float], old: dict[str, float], seed: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (q, centre) in enumerate(new.items()):
        out[f'{q}{{v="new"}}'] = samples(seed + i, centre)
    for i, (q, centre) in enumerate(old.items()):
        out[f'{q}{{v="previous"}}'] = samples(seed + 10 + i, centre)
    return out


async def test_canary_judges_both_variants_over_the_window() -> None:
    same = {"e": 0.01, "l": 0.03, "m": 0.02}
    result, _ = await run(canary_spec(), Scripted({}, ranges(same, same)))
    assert result.verdict is P and result.canary is not None and result.canary.score == 100
    worse = await run(canary_spec(), Scripted({}, ranges(same | {"e": 0.04}, same)))
    assert worse[0].verdict is F and worse[0].canary.metrics[0].classification.value == "high"


async def test_canary_half_the_metrics_without_series_is_no_data() -> None:
    same = {"e": 0.01, "l": 0.03, "m": 0.02}
    data = ranges(same, same)
    for key in ('l{v="new"}', 'm{v="previous"}'):
        del data[key]
    result, _ = await run(canary_spec(), Scripted({}, data))
    assert result.verdict is N and result.canary is not None and result.canary.verdict is N


async def test_canary_not_asked_after_go_live() -> None:
    result, _ = await run(canary_spec(), Scripted({}, {}), canary=False)
    assert result.verdict is P and result.canary is None


async def test_the_worse_of_argo_and_canary() -> None:
    same = {"e": 0.01, "l": 0.03, "m": 0.02}
    spec = canary_spec().model_copy(update={"metrics": [AnalysisMetric.model_validate(ERR)], "count": 1})
    result, _ = await run(spec, Scripted({'e{v="new"}': [0.03]}, ranges(same, same)))
    assert result.verdict is M and result.canary is not None and result.canary.verdict is P


def test_parse_result_shapes_and_errors() -> None:
    vector = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
    }
    assert parse_result(vector)[0].values() == [], "NaN (0/0) is no value"
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "2.5"]}}
    assert parse_result(scalar)[0].values() == [2.5]
    matrix = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"a": "b"}, "values": [[1, "1"], [2, "+Inf"], [3, "3"]]}],
        },
    }
    assert parse_result(matrix)[0].values() == [1.0, 3.0]
    assert parse_result({"status": "success", "data": {"resultType": "vector", "result": []}}) == []
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        parse_result({"status": "error", "errorType": "bad_data", "error": "parse error\nat char 3"})
    with pytest.raises(PrometheusError, match="not a number"):
        parse_result({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "x"]}]}})


def test_an_unreachable_server_is_one_line() -> None:
    with pytest.raises(PrometheusError) as info:
        Prometheus(f"http://127.0.0.1:{free_port()}", timeout=2).query("up")
    assert "unreachable" in str(info.value) and "\n" not in str(info.value)


def judgment(n: int, verdict: Verdict = F) -> Judgment:
    rows = [
        {
            "name": f"metric_with_a_long_name_{i:02d}",
            "group": "g",
            "direction": "increase_is_bad",
            "critical": i == 0,
            "n_new": 30,
            "n_old": 30,
            "median_new": 1.0,
            "median_old": 1.0,
            "ratio": 1.5 if i % 2 else 1.0,
            "p_value": 0.001,
            "classification": "high" if i % 2 else "pass",
            "weight": 100 / n,
        }
        for i in range(n)
    ]
    return Judgment.model_validate(
        {"verdict": verdict, "score": 50.0, "reason": "score below 75", "metrics": rows}
    )


@pytest.mark.parametrize("n", [1, 3, 20])
def test_the_approvers_line_is_bounded_and_one_line(n: int) -> None:
    report = HealthReport(
        verdict=F, samples=180, detail="prometheus analysis fail: " + "x" * 970, canary=judgment(n)
    )
    text = details.health(report)
    assert len(text) <= details.HEALTH_LIMIT and "\n" not in text
    assert text.startswith("health fail, 180 samples; canary fail (score 50): score below 75 | ")
    first = "metric_with_a_long_name_01 high x1.50 p=0.001" if n > 1 else "metric_with_a_long_name_00 pass!"
    assert text.split(" | ")[1].startswith(first), "failures first, critical marked !"
    if n == 20:
        assert "more" in text
    # The round trip through the history (JSON) keeps the table.
    again = HealthReport.model_validate(json.loads(report.model_dump_json()))
    assert again.canary == report.canary


def test_a_report_from_before_analysis_still_reads() -> None:
    old = {"verdict": "pass", "error_rate": 0.0, "latency_ms": 3.0, "samples": 60, "detail": "ok"}
    report = HealthReport.model_validate(old)
    assert report.canary is None and report.measurements == []
    assert details.health(report) == "health pass, 60 samples, error rate 0.00%, latency 3 ms (ok)"


async def test_queries_past_the_budget_are_not_sent() -> None:
    client = Scripted({'e{v="new"}': [0.0, 0.0, 0.0]}, {})
    clock = Clock()

    async def slow_sleep(seconds: float) -> None:
        await clock.sleep(seconds * 200)  # each wait lasts far longer than asked

    analysis = Analysis(argo([ERR]), {"service": "greeter"}, client=client, sleep=slow_sleep, now=clock.now)
    result = await analysis.run()
    assert result.verdict is N and len(client.asked) == 1
    assert "past its 570s" in result.detail()


async def test_each_variant_is_selected_with_the_version_it_serves() -> None:
    """`{variant_version}` is the release's version for `new` and the replaced one for
    `previous`: after a go-live `new` goes on with the old release, and must not count."""
    query = 'x{variant="{variant}",version="{variant_version}"}'
    spec = argo(
        [{"name": "errors", "query": query, "success": "result < 0.02"}],
        count=1,
        canary={"metrics": [{"name": "errors", "query": query}], "lookback": 20, "step": 2},
    )
    new_q, old_q = 'x{variant="new",version="1.2.0"}', 'x{variant="previous",version="1.1.0"}'
    client = Scripted({new_q: [0.0]}, {new_q: [0.0] * 10, old_q: [0.0] * 10})
    clock = Clock()
    values = {"service": "greeter", "version": "1.2.0", "previous_version": "1.1.0"}
    analysis = Analysis(spec, values, client=client, sleep=clock.sleep, now=clock.now)
    await analysis.run(canary=True)
    assert set(client.asked) == {new_q, old_q}
