"""The catalog's `analysis` section: health from Prometheus queries instead of a probe.

Two parts, either or both:

- `metrics`, Argo Rollouts-style: each query is measured `count` times, `interval` seconds
  apart, and its value checked against a `failure` and a `success` condition;
- `canary`, Kayenta-style: each query is read over a lookback window for the new and the
  previous variant, and `relman.analysis.judge` compares the two samples.

Conditions are a fixed grammar, `result <op> number`, parsed here and never evaluated as
code. Queries are PromQL with placeholders; a placeholder is an identifier in braces
(`{variant}`), which PromQL itself never writes (its label matchers hold `=`), so
`rate(x{code=~"5.."}[1m])` needs no escaping. Unknown placeholders are refused when the
catalog loads, and a value holding a quote, a backslash or a line break is refused when the
query is rendered, so no value can close a PromQL string and write its own matcher.

Imports pydantic and the contracts only: the catalog loads without numpy or scipy.
"""

from __future__ import annotations

import math
import operator
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from relman.contracts.analysis import Direction, GroupName, JudgeConfig, MetricName, MetricSpec

QUERY_PLACEHOLDERS = frozenset(
    {"service", "version", "previous_version", "variant", "variant_version", "environment"}
)
"""What a query may name: the release's service, its version, the version it replaces, the
flag variant being measured and the version that variant serves, and the environment."""
MAX_ANALYSIS_SECONDS = 540
"""(count - 1) x interval at most: the workflow gives a health check 10 minutes."""
MAX_MEASUREMENTS = 200
"""count x metrics at most: every measurement is kept in the health report."""
MAX_RANGE_POINTS = 2000
"""lookback / step at most, per variant and metric (Prometheus refuses above 11,000)."""

_QUERY_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSAFE_VALUE = re.compile(r"[\"'`\\\r\n\x00]")
_CONDITION = re.compile(r"\s*result\s*(<=|>=|==|!=|<|>)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class AnalysisError(ValueError):
    """A condition or a query that cannot be used; the message says which and why."""


def parse_condition(text: str) -> tuple[str, float]:
    """(operator, number) of a condition such as `result < 0.05`; AnalysisError otherwise."""
    found = _CONDITION.fullmatch(text)
    if found is None:
        raise AnalysisError(
            f"condition {text[:80]!r} must read `result <op> number` with op one of < <= > >= == !="
        )
    number = float(found.group(2))
    if not math.isfinite(number):
        raise AnalysisError(f"condition {text[:80]!r}: the number must be finite")
    return found.group(1), number


def condition_holds(text: str, value: float) -> bool:
    """Whether `value` meets the condition `text` (already checked by `parse_condition`)."""
    op, number = parse_condition(text)
    return _OPERATORS[op](value, number)


def query_placeholders(query: str) -> set[str]:
    return set(_QUERY_PLACEHOLDER.findall(query))


def render_query(query: str, values: Mapping[str, str | None]) -> str:
    """The query with each `{name}` replaced by its value verbatim.

    A value with a quote, backslash or line break is refused (it could end a PromQL string);
    so is a placeholder without a value here (e.g. `{previous_version}` on a first release).
    """

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        value = values.get(name)
        if value is None:
            raise AnalysisError(f"placeholder {{{name}}} has no value for this release")
        if _UNSAFE_VALUE.search(value):
            raise AnalysisError(
                f"placeholder {{{name}}}: value {value[:40]!r} holds a quote, backslash or line break"
            )
        return value

    return _QUERY_PLACEHOLDER.sub(repl, query)


def _check_condition(text: str | None) -> str | None:
    if text is not None:
        parse_condition(text)
    return text


def _check_query(query: str) -> str:
    unknown = query_placeholders(query) - QUERY_PLACEHOLDERS
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {sorted(unknown)} in the query; allowed: {sorted(QUERY_PLACEHOLDERS)}"
        )
    return query


Condition = Annotated[str, StringConstraints(max_length=100), AfterValidator(_check_condition)]
Query = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), AfterValidator(_check_query)
]
VariantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisMetric(_Strict):
    """One Argo-style metric: a query measured `count` times and judged by its conditions.

    With both conditions, a value meeting `failure` fails, else one meeting `success` passes,
    else the measurement is inconclusive. With one condition, a value not meeting `success`
    fails and a value not meeting `failure` passes (Argo Rollouts' rules).
    """

    name: MetricName
    query: Query
    """PromQL giving one number (aggregate to one series, e.g. `sum(...)`)."""
    success: Condition | None = None
    failure: Condition | None = None

    @model_validator(mode="after")
    def _a_condition(self) -> AnalysisMetric:
        if self.success is None and self.failure is None:
            raise ValueError(f"metric {self.name}: give a success or a failure condition (or both)")
        return self


class CanaryMetric(_Strict):
    """One metric of the canary judge: its query and how the judge reads it."""

    name: MetricName
    query: Query
    """PromQL read over the lookback window once per variant (`{variant}` tells which)."""
    group: GroupName = "default"
    direction: Direction = Direction.INCREASE_IS_BAD
    critical: bool = False
    tolerance: float | None = Field(default=None, ge=0, lt=1)


class CanarySpec(_Strict):
    """The canary judge: its metrics and parameters (see `JudgeConfig`) and the window read."""

    metrics: list[CanaryMetric] = Field(min_length=1, max_length=20)
    lookback: float = Field(default=300, gt=0, le=24 * 3600)
    """Seconds of history compared, ending when the judge runs: lookback / step samples per
    variant and metric."""
    step: float = Field(default=15, gt=0, le=3600)
    """Seconds between two samples. Write each query's rate() window as step + the scrape
    interval (`[2s]` for a 1 s step and 1 s scrapes): each sample then counts the requests
    of its own step and no other's. Longer windows overlap, and overlapping samples are not
    independent: the rank test would see changes that are not there."""
    confidence: float = Field(default=0.99, gt=0, lt=1)
    tolerance: float = Field(default=0.25, ge=0, lt=1)
    effect: Literal["mean", "median"] = "mean"
    min_samples: int = Field(default=10, ge=3)
    pass_threshold: float = Field(default=95.0, ge=0, le=100)
    marginal_threshold: float = Field(default=75.0, ge=0, le=100)
    group_weights: dict[GroupName, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CanarySpec:
        if self.lookback / self.step > MAX_RANGE_POINTS:
            raise ValueError(
                f"lookback {self.lookback:g}s / step {self.step:g}s is over {MAX_RANGE_POINTS} samples"
            )
        self.judge_config()  # the judge's own rules (thresholds, duplicates, weights), at load
        return self

    def judge_config(self) -> JudgeConfig:
        return JudgeConfig(
            metrics=[
                MetricSpec(
                    name=m.name,
                    group=m.group,
                    direction=m.direction,
                    critical=m.critical,
                    tolerance=m.tolerance,
                )
                for m in self.metrics
            ],
            confidence=self.confidence,
            tolerance=self.tolerance,
            effect=self.effect,
            min_samples=self.min_samples,
            pass_threshold=self.pass_threshold,
            marginal_threshold=self.marginal_threshold,
            group_weights=dict(self.group_weights),
        )


class Variants(_Strict):
    """The names the service's metrics give the two variants of a release (label `variant`)."""

    new: VariantName = "new"
    previous: VariantName = "previous"

    @model_validator(mode="after")
    def _distinct(self) -> Variants:
        if self.new == self.previous:
            raise ValueError(f"the new and previous variants are both named {self.new!r}")
        return self


class AnalysisSpec(_Strict):
    """Health from Prometheus: Argo-style measured metrics, a canary judge, or both.

    The verdict is the worse of the two (fail, then no_data, then marginal, then pass).
    """

    provider: Literal["prometheus"] = "prometheus"
    address: str
    """The Prometheus server's base URL, e.g. http://127.0.0.1:9090."""
    timeout: float = Field(default=10, gt=0, le=20)
    """Seconds per query (within the activity's 30 s heartbeat)."""
    interval: float = Field(default=10, ge=0, le=600)
    """Seconds between two measurements of the metrics."""
    count: int = Field(default=3, ge=1, le=100)
    """Measurements of each metric."""
    failure_limit: int = Field(default=0, ge=0)
    """Failed measurements a metric may have and still pass (more fail the analysis)."""
    consecutive_success_limit: int = Field(default=0, ge=0)
    """When > 0, a metric that passes this many measurements in a row is done early."""
    variants: Variants = Field(default_factory=Variants)
    metrics: list[AnalysisMetric] = Field(default_factory=list, max_length=20)
    canary: CanarySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _address(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("address"), str):
            url = urlsplit(data["address"])
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"address {data['address'][:80]!r} must be an http(s) URL")
            if url.username or url.password or url.query or url.fragment:
                raise ValueError("address: no credentials, query or fragment in the Prometheus URL")
        return data

    @model_validator(mode="after")
    def _bounded(self) -> AnalysisSpec:
        if not self.metrics and self.canary is None:
            raise ValueError("give metrics, a canary, or both")
        names = [m.name for m in self.metrics]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metrics named more than once: {', '.join(twice)}")
        if (self.count - 1) * self.interval > MAX_ANALYSIS_SECONDS:
            raise ValueError(
                f"(count - 1) x interval = {(self.count - 1) * self.interval:g}s is over "
                f"{MAX_ANALYSIS_SECONDS}s, the time a health check is given"
            )
        if self.count * len(self.metrics) > MAX_MEASUREMENTS:
            raise ValueError(f"count x metrics is over {MAX_MEASUREMENTS} measurements")
        if self.failure_limit >= self.count and self.metrics:
            raise ValueError(f"failure_limit {self.failure_limit} must be below count {self.count}")
        return self


def analysis_available() -> bool:
    """Whether a `prometheus` program is on PATH: the demo analyses with it, else probes."""
    return shutil.which("prometheus") is not None
