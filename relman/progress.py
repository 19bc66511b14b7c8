"""What a running release is doing between phase changes: its pending activities.

A build or a test suite can run for many minutes inside one phase. Temporal keeps each
pending activity's attempt, start time, last heartbeat and last failure; `RunningStep`
holds that for the CLI and the demo, and `StepTicker` decides when to print it again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo

from relman.contracts import Model

STATE_NAMES = {
    PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED: "scheduled",
    PendingActivityState.PENDING_ACTIVITY_STATE_STARTED: "running",
    PendingActivityState.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED: "cancelling",
    PendingActivityState.PENDING_ACTIVITY_STATE_PAUSED: "paused",
    PendingActivityState.PENDING_ACTIVITY_STATE_PAUSE_REQUESTED: "pausing",
}
DETAIL_LIMIT = 120


class RunningStep(Model):
    """One activity of a release that has not finished: running, or waiting to retry."""

    activity: str
    state: str
    attempt: int
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    detail: dict[str, Any] = {}
    """The activity's last heartbeat (suite name, output so far, lock it waits for...)."""
    last_failure: str = ""
    next_attempt_at: datetime | None = None


def _time(ts: Any) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


def running_step(info: PendingActivityInfo, detail: dict[str, Any]) -> RunningStep:
    """A `RunningStep` from the server's description of a pending activity."""
    return RunningStep(
        activity=info.activity_type.name,
        state=STATE_NAMES.get(info.state, "unknown"),
        attempt=info.attempt,
        started_at=_time(info.last_started_time),
        heartbeat_at=_time(info.last_heartbeat_time),
        detail=detail,
        last_failure=info.last_failure.message[:DETAIL_LIMIT] if info.HasField("last_failure") else "",
        next_attempt_at=_time(info.next_attempt_schedule_time),
    )


def describe_step(step: RunningStep, now: datetime) -> str:
    """One line for a terminal: what runs, for how long, which attempt, and its last heartbeat."""
    parts = [step.activity]
    if step.state == "running" and step.started_at is not None:
        parts.append(f"running {_seconds(now - step.started_at)}")
    else:
        parts.append(step.state)
    parts.append(f"attempt {step.attempt}")
    detail = _detail(step.detail)
    if detail:
        parts.append(detail)
    if step.last_failure and step.state != "running":
        parts.append(f"last error: {step.last_failure}")
    return ", ".join(parts)


def _seconds(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s"


def _detail(detail: dict[str, Any]) -> str:
    # `elapsed` is the runner's own clock at the last heartbeat; the start time says more.
    shown = {k: v for k, v in detail.items() if k not in {"elapsed", "step", "starting"}}
    text = ", ".join(
        _size(v) + " output" if k == "output_bytes" and isinstance(v, int) else f"{k} {v}"
        for k, v in shown.items()
    )
    return text[:DETAIL_LIMIT]


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n // 1024} KiB"


class StepTicker:
    """Which running steps to print now: new or changed ones at once, others every `every`."""

    def __init__(self, after: timedelta = timedelta(seconds=2), every: timedelta = timedelta(seconds=5)):
        self.after = after
        self.every = every
        self._shown: dict[str, tuple[tuple[Any, ...], datetime]] = {}

    def lines(self, steps: list[RunningStep], now: datetime) -> list[str]:
        """Lines for the steps worth printing at `now`; short steps are never printed."""
        out = []
        for step in steps:
            started = step.started_at or now
            if step.state == "running" and now - started < self.after:
                continue
            key = (step.state, step.attempt, step.last_failure, _detail(step.detail))
            previous = self._shown.get(step.activity)
            if previous is not None and previous[0] == key and now - previous[1] < self.every:
                continue
            self._shown[step.activity] = (key, now)
            out.append(describe_step(step, now))
        return out
