"""Health from Prometheus: Argo Rollouts-style measured metrics and the Kayenta-style canary.

Argo's rules, as relman applies them to each metric of the catalog's `analysis`:

- `count` measurements, `interval` seconds apart (the activity heartbeats in between);
- a measurement is `fail`, `pass` or inconclusive (`marginal`) by the metric's conditions,
  `no_data` when the query gives no series (or no finite value) or cannot be run;
- more failures than `failure_limit` fail the metric (and end the analysis: the verdict
  cannot get better); `consecutive_success_limit` passes in a row pass it early;
- otherwise, after the last measurement: `no_data` when half or more of its measurements had
  none, `marginal` when one was inconclusive, else `pass`.

The analysis is the worst of its metrics, and the health verdict the worse of the analysis
and the canary judge: fail, then no_data, then marginal, then pass. `fail` rolls the stage
back; `no_data` gets one more bake before a human decides; `marginal` asks a human at once
(`relman.workflows.policy.stage_action`); only `pass` promotes by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from relman.activities.prometheus import Prometheus, PrometheusError, one_series, one_value
from relman.analysis.judge import judge
from relman.analysis.spec import (
    AnalysisError,
    AnalysisMetric,
    AnalysisSpec,
    CanarySpec,
    condition_holds,
    render_query,
)
from relman.contracts import Judgment, Measurement, Verdict

SEVERITY = (Verdict.PASS, Verdict.MARGINAL, Verdict.NO_DATA, Verdict.FAIL)
"""Verdicts from best to worst."""
HEARTBEAT_EVERY = 5.0
"""Seconds between heartbeats while waiting for the next measurement."""
BUDGET = 570.0
"""Seconds an analysis may take (the workflow gives a health check 600): queries that would
start later are not sent, their measurements `no_data`, so a hanging Prometheus gives a
verdict instead of a timed-out activity."""


def worst(*verdicts: Verdict) -> Verdict:
    """The worst of `verdicts` (pass when none)."""
    return max(verdicts, key=SEVERITY.index, default=Verdict.PASS)


def measure(metric: AnalysisMetric, value: float | None) -> Verdict:
    """One measurement's verdict by the metric's conditions (Argo Rollouts' rules)."""
    if value is None:
        return Verdict.NO_DATA
    if metric.failure is not None and condition_holds(metric.failure, value):
        return Verdict.FAIL
    if metric.success is not None:
        if condition_holds(metric.success, value):
            return Verdict.PASS
        return Verdict.MARGINAL if metric.failure is not None else Verdict.FAIL
    return Verdict.PASS


def _consecutive_passes(verdicts: list[Verdict]) -> int:
    run = 0
    for verdict in reversed(verdicts):
        if verdict is not Verdict.PASS:
            break
        run += 1
    return run


def metric_verdict(
    verdicts: list[Verdict], *, count: int, failure_limit: int, consecutive_success_limit: int = 0
) -> Verdict | None:
    """A metric's verdict from its measurements so far; None while it needs more."""
    if sum(v is Verdict.FAIL for v in verdicts) > failure_limit:
        return Verdict.FAIL
    if consecutive_success_limit and _consecutive_passes(verdicts) >= consecutive_success_limit:
        return Verdict.PASS
    if len(verdicts) < count:
        return None
    if 2 * sum(v is Verdict.NO_DATA for v in verdicts) >= len(verdicts):
        return Verdict.NO_DATA
    if Verdict.MARGINAL in verdicts:
        return Verdict.MARGINAL
    return Verdict.PASS


@dataclass
class AnalysisResult:
    verdict: Verdict
    measurements: list[Measurement] = field(default_factory=list)
    canary: Judgment | None = None
    notes: list[str] = field(default_factory=list)
    """One line per metric or problem, for the report's detail."""

    def detail(self, limit: int = 1000) -> str:
        text = f"prometheus analysis {self.verdict.value}: " + "; ".join(self.notes)
        return text if len(text) <= limit else text[: limit - 3] + "..."


Sleep = Callable[[float], Awaitable[None]]
Heartbeat = Callable[[dict[str, object]], None]


class Analysis:
    """Runs one catalog `analysis` against Prometheus for one release's values.

    `values` fill the queries' placeholders (`variant` is set per query). `sleep`, `now` and
    `heartbeat` are injectable so tests can count measurements without waiting.
    """

    def __init__(
        self,
        spec: AnalysisSpec,
        values: Mapping[str, str | None],
        *,
        client: Prometheus | None = None,
        heartbeat: Heartbeat = lambda _: None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.values = dict(values)
        self.client = client or Prometheus(spec.address, spec.timeout)
        self.heartbeat = heartbeat
        self.sleep = sleep
        self.now = now
        self.deadline = now() + BUDGET

    def _query(self, query: str, variant: str) -> str:
        self.heartbeat({"step": "analysis", "query": query[:80]})
        if self.now() > self.deadline:
            raise AnalysisError(f"not sent: the analysis is past its {BUDGET:g}s")
        # The variant's version too: after a go-live the `new` variant's series goes on with
        # the old release, so a query selecting by variant alone would mix the two releases.
        serves = self.values.get("previous_version" if variant == self.spec.variants.previous else "version")
        return render_query(query, {**self.values, "variant": variant, "variant_version": serves})

    async def instant(self, metric: AnalysisMetric) -> tuple[float | None, str]:
        """The metric's value now for the new variant, and why there is none ('' if there is)."""
        try:
            promql = self._query(metric.query, self.spec.variants.new)
            value = one_value(await asyncio.to_thread(self.client.query, promql))
        except (AnalysisError, PrometheusError) as exc:
            return None, str(exc)
        return value, ""

    async def _wait(self, seconds: float, run: int) -> None:
        end = self.now() + seconds
        while (left := end - self.now()) > 0:
            self.heartbeat({"step": "analysis", "next_run": run})
            await self.sleep(min(left, HEARTBEAT_EVERY))

    async def measured(self) -> tuple[Verdict, list[Measurement], list[str]]:
        """Argo-style: every metric measured up to `count` times; the worst metric's verdict."""
        spec = self.spec
        taken: dict[str, list[Verdict]] = {m.name: [] for m in spec.metrics}
        decided: dict[str, Verdict] = {}
        why: dict[str, str] = {}
        measurements: list[Measurement] = []
        for run in range(spec.count):
            if run:
                await self._wait(spec.interval, run)
            for metric in spec.metrics:
                if metric.name in decided:
                    continue
                value, problem = await self.instant(metric)
                verdict = measure(metric, value)
                measurements.append(Measurement(metric=metric.name, index=run, value=value, verdict=verdict))
                taken[metric.name].append(verdict)
                if problem:
                    why[metric.name] = problem
                done = metric_verdict(
                    taken[metric.name],
                    count=spec.count,
                    failure_limit=spec.failure_limit,
                    consecutive_success_limit=spec.consecutive_success_limit,
                )
                if done is not None:
                    decided[metric.name] = done
            self.heartbeat({"step": "analysis", "run": run, "decided": len(decided)})
            if len(decided) == len(spec.metrics) or Verdict.FAIL in decided.values():
                break  # all known, or a failure no later measurement can undo
        notes = []
        for metric in spec.metrics:
            verdicts = taken[metric.name]
            # Undecided only when another metric failed first: the analysis stopped there.
            outcome = decided[metric.name].value if metric.name in decided else "stopped"
            tally = ", ".join(f"{sum(v is k for v in verdicts)} {k.value}" for k in SEVERITY if k in verdicts)
            note = f"{metric.name} {outcome} ({tally})"
            notes.append(note + (f": {why[metric.name][:200]}" if metric.name in why else ""))
        return worst(*decided.values()), measurements, notes

    async def samples(
        self, query: str, variant: str, start: float, end: float, step: float
    ) -> tuple[list[float], str]:
        try:
            promql = self._query(query, variant)
            return one_series(await asyncio.to_thread(self.client.query_range, promql, start, end, step)), ""
        except (AnalysisError, PrometheusError) as exc:
            return [], str(exc)

    async def canary(self, canary: CanarySpec, end: float | None = None) -> tuple[Judgment, list[str]]:
        """Kayenta-style: each metric's samples of both variants over the lookback window, judged."""
        end = self.now() if end is None else end
        # lookback / step points, the first one step after the window opens: back-to-back
        # windows (the tests' sub-windows) share no sample.
        start = end - canary.lookback + canary.step
        new: dict[str, list[float]] = {}
        old: dict[str, list[float]] = {}
        problems = []
        for metric in canary.metrics:
            new[metric.name], p_new = await self.samples(
                metric.query, self.spec.variants.new, start, end, canary.step
            )
            old[metric.name], p_old = await self.samples(
                metric.query, self.spec.variants.previous, start, end, canary.step
            )
            if p_new or p_old:
                problems.append(f"{metric.name}: {(p_new or p_old)[:200]}")
        self.heartbeat({"step": "canary", "metrics": len(canary.metrics)})
        return judge(canary.judge_config(), new, old), problems

    async def run(self, *, canary: bool = True) -> AnalysisResult:
        """The measured metrics, then (when asked and configured) the canary over the window
        that ends after them; the verdict is the worse of both."""
        result = AnalysisResult(Verdict.PASS)
        if self.spec.metrics:
            result.verdict, result.measurements, result.notes = await self.measured()
        if canary and self.spec.canary is not None:
            judgment, problems = await self.canary(self.spec.canary)
            result.canary = judgment
            result.verdict = worst(result.verdict, judgment.verdict)
            result.notes.append(
                f"canary {judgment.verdict.value} (score {judgment.score:.0f}): {judgment.reason}"
            )
            result.notes += problems
        return result
