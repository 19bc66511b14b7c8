"""The catalog's `analysis` section: the condition grammar, query placeholders, bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from relman.analysis.spec import (
    AnalysisError,
    AnalysisSpec,
    condition_holds,
    parse_condition,
    render_query,
)
from relman.catalog import CatalogError
from tests.activities.greeter_support import custom_catalog

ERRORS = 'sum(rate(greeter_requests_total{job="{service}",variant="{variant}",code=~"5.."}[2s]))'


@pytest.mark.parametrize(
    ("text", "op", "number"),
    [
        ("result < 0.05", "<", 0.05),
        ("result<=1", "<=", 1.0),
        ("  result >= -2.5e-3 ", ">=", -0.0025),
        ("result > .5", ">", 0.5),
        ("result == 0", "==", 0.0),
        ("result != 7.", "!=", 7.0),
    ],
)
def test_conditions_parse(text: str, op: str, number: float) -> None:
    assert parse_condition(text) == (op, number)


@pytest.mark.parametrize(
    "text",
    [
        "result < 0.05 or True",
        "__import__('os').system('x')",
        "result < nan",
        "result < inf",
        "result =< 1",
        "value < 1",
        "result < 1\nresult > 2",
        "0.05 > result",
        "result",
        "",
        "result < 1e999",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(AnalysisError) as info:
        parse_condition(text)
    assert "\n" not in str(info.value)


def test_condition_holds_at_the_boundary() -> None:
    assert condition_holds("result < 0.05", 0.049) and not condition_holds("result < 0.05", 0.05)
    assert condition_holds("result <= 0.05", 0.05)
    assert condition_holds("result == 0", 0.0) and not condition_holds("result != 0", 0.0)


def test_render_inserts_values_verbatim() -> None:
    query = render_query(ERRORS, {"service": "greeter", "variant": "new"})
    assert query == 'sum(rate(greeter_requests_total{job="greeter",variant="new",code=~"5.."}[2s]))'
    # PromQL's own braces hold `=`, so they are never taken for placeholders.
    assert render_query('up{job="x"}', {}) == 'up{job="x"}'


@pytest.mark.parametrize("value", ['new",job=~".+', "new'", "new`", "new\\", "new\nx", "a\rb"])
def test_render_refuses_a_value_that_could_end_a_promql_string(value: str) -> None:
    with pytest.raises(AnalysisError, match="quote, backslash or line break"):
        render_query(ERRORS, {"service": "greeter", "variant": value})


def test_render_refuses_a_placeholder_without_a_value() -> None:
    with pytest.raises(AnalysisError, match="previous_version"):
        render_query('x{version="{previous_version}"}', {"previous_version": None})


def spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "address": "http://127.0.0.1:9090",
        "interval": 5,
        "count": 3,
        "metrics": [
            {"name": "errors", "query": ERRORS, "success": "result < 0.02", "failure": "result > 0.05"}
        ],
    }
    return data | overrides


def test_a_full_spec_loads() -> None:
    s = AnalysisSpec.model_validate(
        spec(
            canary={
                "metrics": [
                    {"name": "errors", "query": ERRORS, "critical": True, "group": "errors"},
                    {"name": "p95", "query": "x", "direction": "increase_is_bad", "group": "latency"},
                ],
                "group_weights": {"errors": 2},
                "lookback": 30,
                "step": 1,
            }
        )
    )
    assert s.canary is not None
    config = s.canary.judge_config()
    assert config.confidence == 0.99 and config.metrics[0].critical and config.weight_of("errors") == 2
    assert s.variants.new == "new" and s.variants.previous == "previous"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"address": "ftp://prom:9090"}, "http(s) URL"),
        ({"address": "http://user:pw@prom:9090"}, "no credentials"),
        ({"address": "prometheus"}, "http(s) URL"),
        ({"provider": "datadog"}, "provider"),
        ({"metrics": [{"name": "e", "query": 'up{job="{team}"}', "success": "result > 0"}]}, "team"),
        ({"metrics": [{"name": "e", "query": "up", "success": "result ~ 1"}]}, "result <op> number"),
        ({"metrics": [{"name": "e", "query": "up"}]}, "success or a failure"),
        ({"metrics": [{"name": "e e", "query": "up", "success": "result > 0"}]}, "name"),
        ({"metrics": [], "canary": None}, "metrics, a canary"),
        ({"count": 100, "interval": 60}, "over 540s"),
        ({"failure_limit": 3}, "below count"),
        ({"canary": {"metrics": [{"name": "a", "query": 'x{v="{colour}"}'}]}}, "colour"),
        ({"canary": {"metrics": [{"name": "a", "query": "x"}], "lookback": 3600, "step": 1}}, "over 2000"),
        (
            {
                "canary": {
                    "metrics": [{"name": "a", "query": "x"}],
                    "pass_threshold": 50,
                    "marginal_threshold": 80,
                }
            },
            "marginal_threshold",
        ),
        (
            {"canary": {"metrics": [{"name": "a", "query": "x"}, {"name": "a", "query": "y"}]}},
            "more than once",
        ),
        ({"variants": {"new": "v", "previous": "v"}}, "both named"),
        ({"variants": {"new": 'v"', "previous": "p"}}, "variants.new"),
    ],
)
def test_bad_specs_are_refused(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        AnalysisSpec.model_validate(spec(**overrides))
    assert words in str(info.value)


def test_the_catalog_takes_an_analysis_and_names_a_bad_one(tmp_path: Path) -> None:
    good = custom_catalog(tmp_path, analysis=spec())
    analysis = good.service("greeter").analysis
    assert analysis is not None and analysis.metrics[0].name == "errors"
    assert good.service("greeter").health is not None, "the probe stays, as the fallback"
    bad = spec(metrics=[{"name": "e", "query": 'up{job="{job}"}', "success": "result > 0"}])
    with pytest.raises(CatalogError) as info:
        custom_catalog(tmp_path, analysis=bad)
    assert "services.greeter.analysis.metrics.0.query" in str(info.value)
    assert "unknown placeholder(s) ['job']" in str(info.value)


def test_the_readme_example_loads() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Health from Prometheus and the canary judge", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    analysis = yaml.safe_load(block)["services"]["greeter"]["analysis"]
    s = AnalysisSpec.model_validate(analysis)
    assert s.canary is not None and [m.name for m in s.canary.metrics] == [
        "error_rate",
        "latency_p95",
        "latency_mean",
    ]
    values = {"service": "greeter", "variant": "new", "variant_version": "1.2.0"}
    rendered = render_query(s.canary.metrics[0].query, values)
    assert 'job="greeter",variant="new",version="1.2.0",code=~"5.."' in rendered
