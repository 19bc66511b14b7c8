"""Health activity: read a service's metrics and judge them pass / marginal / fail / no_data.

Metrics come from the catalog's probe: an HTTP endpoint on localhost, a JSON file, or a
command printing a JSON object; or, for a service with an `analysis`, from Prometheus
(`relman.activities.analysis`: Argo-style measurements and the canary judge), which then
replaces the probe. Thresholds come from the approved plan's acceptance
criteria; the catalog adds the minimum sample count and the marginal band.
A probe that cannot be read, a stale metrics file, metrics that name another version,
or too few samples, is `no_data` — never a pass.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity

from relman.activities.analysis import Analysis
from relman.activities.runner import command_env, run_command
from relman.activities.services import service_spec
from relman.catalog import Catalog, HealthSpec, ServiceSpec, render_argv, substitute
from relman.contracts import Activity, Environment, HealthInput, HealthReport, Verdict

log = structlog.get_logger(__name__)

_LATENCY_KEYS = ("latency_ms", "latency_p95_ms", "p95_ms")
_SAMPLE_KEYS = ("samples", "requests", "count")


@dataclass(frozen=True)
class HealthThresholds:
    max_error_rate: float
    max_latency_ms: float
    min_samples: int = 10
    margin: float = 0.2
    """Values within this fraction of a threshold, below or above, are marginal."""


def _grade(value: float, limit: float, margin: float) -> Verdict:
    if limit <= 0:
        return Verdict.PASS if value <= 0 else Verdict.FAIL
    if value > limit * (1 + margin):
        return Verdict.FAIL
    if value > limit * (1 - margin):
        return Verdict.MARGINAL
    return Verdict.PASS


def judge_health(
    error_rate: float | None, latency_ms: float | None, samples: int, thresholds: HealthThresholds
) -> Verdict:
    """Pure verdict: no_data without enough samples; otherwise the worse of both grades."""
    if error_rate is None or latency_ms is None or samples < thresholds.min_samples:
        return Verdict.NO_DATA
    grades = {
        _grade(error_rate, thresholds.max_error_rate, thresholds.margin),
        _grade(latency_ms, thresholds.max_latency_ms, thresholds.margin),
    }
    for verdict in (Verdict.FAIL, Verdict.MARGINAL):
        if verdict in grades:
            return verdict
    return Verdict.PASS


class MetricsUnavailable(Exception):
    """The probe could not produce a metrics object."""


def parse_metrics(data: Any, version: str) -> tuple[float | None, float | None, int]:
    """(error_rate, latency_ms, samples) from a metrics object; missing values are None/0.

    Metrics that say which version they measure must measure `version`: the old version's
    numbers (an endpoint still served by it) cannot promote the new one.
    """
    if not isinstance(data, dict):
        raise MetricsUnavailable("metrics are not a JSON object")
    measured = data.get("version")
    if measured is not None and str(measured) != version:
        raise MetricsUnavailable(f"metrics are from version {str(measured)[:64]!r}, not {version}")

    def number(keys: tuple[str, ...]) -> float | None:
        for key in keys:
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return None

    samples = number(_SAMPLE_KEYS)
    return number(("error_rate",)), number(_LATENCY_KEYS), int(samples or 0)


def _last_json_object(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    try:
        return json.loads(text)
    except ValueError:
        raise MetricsUnavailable("the probe printed no JSON metrics object") from None


def _fetch_url(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # localhost only (catalog checks)
            return json.loads(resp.read(1 << 20))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MetricsUnavailable(f"metrics endpoint unreachable or unreadable: {exc}") from None


def release_dir_for(spec: ServiceSpec, environment: Environment, version: str) -> Path | None:
    """Where the version under test lives: in the environment, else the staging copy.

    During a dark launch production's `current` still serves the old version, and the new
    one's bits are the staging copy that passed the tests.
    """
    for env in (environment, Environment.STAGING):
        candidate = spec.env_dir(env) / version
        if candidate.is_dir():
            return candidate
    return None


def _running_other(spec: ServiceSpec, inp: HealthInput) -> str | None:
    """The version production's `current` points at, when it is not the one under test
    (during a dark launch: the version being replaced); None when unknown."""
    base = getattr(spec.environments.get(Environment.PRODUCTION), "base_dir", None)
    if base is None:
        return None
    try:
        running = (Path(base) / "current").resolve(strict=True).name
    except OSError:
        return None
    return running if running != inp.version else None


class HealthActivities:
    """Probes a service's metrics as the catalog describes and judges them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def read_metrics(self, spec: ServiceSpec, service: str, inp: HealthInput) -> Any:
        probe: HealthSpec = spec.health
        if probe.http is not None:
            return await asyncio.to_thread(_fetch_url, probe.http, probe.timeout)
        release_dir = release_dir_for(spec, inp.environment, inp.version)
        values = {
            "version": inp.version,
            "service": service,
            "environment": inp.environment.value,
            "env_dir": str(spec.env_dir(inp.environment)),
            "source_dir": str(spec.workdir),
        }
        if release_dir is not None:
            values["release_dir"] = str(release_dir)
        used = [probe.file or ""] if probe.command is None else [*probe.command, probe.cwd]
        needs_release = any("{release_dir}" in text for text in used)
        if needs_release and release_dir is None:
            raise MetricsUnavailable(
                f"version {inp.version} is not deployed in {inp.environment.value} or staging"
            )
        if probe.file is not None:
            path = Path(substitute(probe.file, values))
            try:
                age = time.time() - path.stat().st_mtime
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise MetricsUnavailable(f"metrics file {path}: {exc}") from None
            if age > probe.max_age:
                # Whatever wrote it has stopped: its numbers say nothing about the release now.
                raise MetricsUnavailable(
                    f"metrics file {path} is stale: written {age:.0f}s ago (max {probe.max_age:g}s)"
                )
            return data
        assert probe.command is not None
        result = await run_command(
            render_argv(probe.command, values),
            cwd=Path(substitute(probe.cwd, values)),
            timeout=probe.timeout,
            env=command_env(spec.env),
            secrets=spec.secrets,
            heartbeat=lambda d: activity.heartbeat({"step": "health", **d}),
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exit {result.returncode}"
            raise MetricsUnavailable(f"probe command {why}: {result.tail[-300:]}")
        return _last_json_object(result.stdout_tail)

    async def analyse(self, spec: ServiceSpec, inp: HealthInput) -> HealthReport:
        """Health from Prometheus per the catalog's `analysis`; the canary only while both
        variants serve (a dark-launch stage's check), not after go-live."""
        assert spec.analysis is not None
        values = {
            "service": inp.service,
            "version": inp.version,
            "previous_version": inp.previous_version or _running_other(spec, inp),
            "environment": inp.environment.value,
        }
        analysis = Analysis(
            spec.analysis, values, heartbeat=lambda d: activity.heartbeat({"step": "health", **d})
        )
        # After go-live the previous variant serves no one: only a stage's check compares them.
        result = await analysis.run(canary=bool(inp.stage))
        counted = sum(m.value is not None for m in result.measurements)
        counted += sum(m.n_new + m.n_old for m in result.canary.metrics) if result.canary else 0
        log.info(
            "health.analysed", key=inp.idempotency_key, verdict=result.verdict.value, detail=result.detail()
        )
        return HealthReport(
            verdict=result.verdict,
            samples=counted,
            detail=result.detail(),
            canary=result.canary,
            measurements=result.measurements,
        )

    @activity.defn(name=Activity.CHECK_HEALTH)
    async def check_health(self, inp: HealthInput) -> HealthReport:
        """Read the metrics once and return a verdict; an unreadable probe is `no_data`."""
        spec = service_spec(self.catalog, inp.service)
        if spec.analysis is not None:
            return await self.analyse(spec, inp)
        thresholds = HealthThresholds(
            max_error_rate=inp.acceptance.max_error_rate,
            max_latency_ms=inp.acceptance.max_latency_ms,
            min_samples=spec.health.min_samples,
            margin=spec.health.margin,
        )
        try:
            error_rate, latency_ms, samples = parse_metrics(
                await self.read_metrics(spec, inp.service, inp), inp.version
            )
        except MetricsUnavailable as exc:
            log.warning("health.no_data", key=inp.idempotency_key, reason=str(exc))
            return HealthReport(verdict=Verdict.NO_DATA, detail=str(exc)[:1000])
        verdict = judge_health(error_rate, latency_ms, samples, thresholds)
        detail = (
            f"error_rate={error_rate} (max {thresholds.max_error_rate}), "
            f"latency_ms={latency_ms} (max {thresholds.max_latency_ms}), "
            f"samples={samples} (min {thresholds.min_samples})"
        )
        log.info("health.checked", key=inp.idempotency_key, verdict=verdict.value, detail=detail)
        return HealthReport(
            verdict=verdict, error_rate=error_rate, latency_ms=latency_ms, samples=samples, detail=detail
        )
