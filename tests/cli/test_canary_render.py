"""The canary judge's table where approvers decide a marginal stage: `relman vote` and `status`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from relman.analysis.judge import judge
from relman.cli.render import describe_subject, format_status
from relman.contracts import (
    Decision,
    Gate,
    HealthReport,
    JudgeConfig,
    MetricSpec,
    Phase,
    ReleaseStatus,
    StageStatus,
    Verdict,
)
from tests.cli.test_status_format import RID, plan, request

NOW = datetime(2025, 3, 1, 12, 10, tzinfo=UTC)


def marginal_status() -> ReleaseStatus:
    g = np.random.default_rng(3)
    names = ["error_rate", "latency_p95", "latency_mean", "saturation"]
    config = JudgeConfig(metrics=[MetricSpec(name=n) for n in names])
    old = {n: g.normal(100, 5, 30) for n in names}
    new = {n: g.normal(100, 5, 30) for n in names} | {"latency_p95": g.normal(200, 5, 30)}
    canary = judge(config, new, old)
    assert canary.verdict is Verdict.MARGINAL
    health = HealthReport(
        verdict=Verdict.MARGINAL, samples=240, detail="prometheus analysis marginal", canary=canary
    )
    stage = StageStatus(
        name="quarter", percent=25, verdict=None, health=health, started_at=NOW - timedelta(minutes=1)
    )
    return ReleaseStatus.model_validate(
        {
            "release_id": RID,
            "request": request(),
            "phase": Phase.DARK_LAUNCH,
            "plan": plan(),
            "stages": [stage],
        }
    )


def test_a_marginal_vote_shows_the_canary_table() -> None:
    lines = describe_subject(marginal_status(), Gate.MARGINAL, "c" * 64, Decision.APPROVE)
    assert lines[1].startswith("  health      marginal")
    assert lines[2].startswith("    verdict marginal (score 75.0)")
    assert lines[3].split()[0] == "metric"
    rows = {line.split()[0]: line for line in lines[4:]}
    assert set(rows) == {"error_rate", "latency_p95", "latency_mean", "saturation"}
    assert rows["latency_p95"].endswith("high") and rows["error_rate"].endswith("pass")


def test_status_shows_the_table_under_the_stage_and_none_without_a_canary() -> None:
    text = format_status(marginal_status(), now=NOW)
    assert "      latency_p95" in text and "verdict marginal (score 75.0)" in text
    plain = marginal_status()
    assert plain.stages[0].health is not None
    plain.stages[0].health = plain.stages[0].health.model_copy(update={"canary": None})
    assert "verdict marginal (score" not in format_status(plain, now=NOW)
