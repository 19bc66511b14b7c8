"""How running steps are described and when they are printed again (pure, no Temporal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relman.progress import RunningStep, StepTicker, describe_step

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def suite(name: str = "integration", started: datetime = T0, **changes: object) -> RunningStep:
    step = RunningStep(
        activity="run_tests",
        state="running",
        attempt=1,
        started_at=started,
        detail={"suite": name, "elapsed": 3.2, "output_bytes": 5 * 1024},
    )
    return step.model_copy(update=changes)


def test_a_running_step_reads_as_what_how_long_which_attempt_and_its_heartbeat() -> None:
    assert describe_step(suite(), T0 + timedelta(seconds=12)) == (
        "run_tests, running 12s, attempt 1, suite integration, 5 KiB output"
    )
    assert "running 3m05s" in describe_step(suite(), T0 + timedelta(seconds=185))
    small = suite().model_copy(update={"detail": {"suite": "unit", "output_bytes": 300}})
    assert describe_step(small, T0).endswith("suite unit, 300 B output")


def test_a_step_waiting_to_retry_shows_its_last_error() -> None:
    step = RunningStep(
        activity="close_change", state="scheduled", attempt=4, last_failure="connection refused"
    )
    assert describe_step(step, T0) == "close_change, scheduled, attempt 4, last error: connection refused"


def test_short_steps_are_never_printed() -> None:
    ticker = StepTicker(after=timedelta(seconds=2))
    assert ticker.lines([suite()], T0 + timedelta(seconds=1)) == []
    assert len(ticker.lines([suite()], T0 + timedelta(seconds=2))) == 1


def test_a_step_is_printed_again_when_it_changes_or_every_interval() -> None:
    ticker = StepTicker(after=timedelta(seconds=2), every=timedelta(seconds=10))
    at = T0 + timedelta(seconds=3)
    assert len(ticker.lines([suite()], at)) == 1
    assert ticker.lines([suite()], at + timedelta(seconds=1)) == []
    changed = ticker.lines([suite("system")], at + timedelta(seconds=2))
    assert changed and "suite system" in changed[0]
    assert ticker.lines([suite("system")], at + timedelta(seconds=5)) == []
    assert len(ticker.lines([suite("system")], at + timedelta(seconds=12))) == 1
    retried = ticker.lines([suite("system", attempt=2)], at + timedelta(seconds=13))
    assert retried and "attempt 2" in retried[0]
