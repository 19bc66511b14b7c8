"""DORA metrics over CMDB change rows: pure functions, no I/O.

Definitions (over the half-open period [since, until)):
- a *deployment* is a change that reached production 100% (`production_at` in the period);
- a *deployment attempt* is a change whose rollout reached production users: it has
  `production_at`, or it failed in production (`failed_at`: dark launch or go-live).
  Its time is `production_at`, else `failed_at`;
- deployment frequency = deployments / days in the period;
- lead time = median of `production_at - (committed_at or requested_at)`, in hours;
- change fail rate = attempts closed `rolled_back`/`unsuccessful` / attempts;
- failed deployment recovery time = median of `recovered_at - failed_at`, in hours,
  over failures (`failed_at`) in the period that recovered;
- rework rate = emergency changes among attempts / attempts.
Rates and medians are None when there is nothing to measure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from statistics import median

from pydantic import BaseModel, ConfigDict

from relman.cmdb.records import ChangeRecord
from relman.contracts import ChangeType, CloseCode

FAILED_CODES = frozenset({CloseCode.ROLLED_BACK, CloseCode.UNSUCCESSFUL})


class DoraDay(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: date
    deployments: int
    attempts: int
    failures: int
    emergency: int
    lead_time_hours: float | None
    recovery_hours: float | None


class DoraMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    service: str | None
    deployments: int
    attempts: int
    failures: int
    deployment_frequency_per_day: float
    lead_time_hours: float | None
    change_fail_rate: float | None
    recovery_hours: float | None
    rework_rate: float | None
    series: list[DoraDay]


def _in(at: datetime | None, since: datetime, until: datetime) -> bool:
    return at is not None and since <= at < until


def attempt_time(c: ChangeRecord) -> datetime | None:
    return c.production_at or c.failed_at


def is_failure(c: ChangeRecord) -> bool:
    return c.close_code in FAILED_CODES


def lead_time_hours(c: ChangeRecord) -> float | None:
    if c.production_at is None:
        return None
    start = c.committed_at or c.requested_at
    return (c.production_at - start).total_seconds() / 3600


def recovery_hours(c: ChangeRecord) -> float | None:
    if c.failed_at is None or c.recovered_at is None:
        return None
    return (c.recovered_at - c.failed_at).total_seconds() / 3600


def _median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(median(known)) if known else None


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def compute(
    changes: Sequence[ChangeRecord], since: datetime, until: datetime, service: str | None = None
) -> DoraMetrics:
    """All five metrics and a per-day series (UTC days) over [since, until)."""
    since, until = _utc(since), _utc(until)
    if until <= since:
        raise ValueError("until must be after since")
    rows = [c for c in changes if service is None or c.service == service]
    deployments = [c for c in rows if _in(c.production_at, since, until)]
    attempts = [c for c in rows if _in(attempt_time(c), since, until)]
    failures = [c for c in attempts if is_failure(c)]
    recovered = [c for c in rows if _in(c.failed_at, since, until)]
    days = (until - since).total_seconds() / 86400
    return DoraMetrics(
        since=since,
        until=until,
        service=service,
        deployments=len(deployments),
        attempts=len(attempts),
        failures=len(failures),
        deployment_frequency_per_day=len(deployments) / days,
        lead_time_hours=_median(lead_time_hours(c) for c in deployments),
        change_fail_rate=len(failures) / len(attempts) if attempts else None,
        recovery_hours=_median(recovery_hours(c) for c in recovered),
        rework_rate=(
            sum(1 for c in attempts if c.change_type == ChangeType.EMERGENCY) / len(attempts)
            if attempts
            else None
        ),
        series=series(rows, since, until),
    )


def series(changes: Sequence[ChangeRecord], since: datetime, until: datetime) -> list[DoraDay]:
    """One entry per UTC calendar day touching [since, until), in order, empty days included."""
    since, until = _utc(since), _utc(until)
    out: list[DoraDay] = []
    day = since.date()
    while datetime.combine(day, datetime.min.time(), UTC) < until:
        start = max(since, datetime.combine(day, datetime.min.time(), UTC))
        end = min(until, start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))
        deployments = [c for c in changes if _in(c.production_at, start, end)]
        attempts = [c for c in changes if _in(attempt_time(c), start, end)]
        out.append(
            DoraDay(
                day=day,
                deployments=len(deployments),
                attempts=len(attempts),
                failures=sum(1 for c in attempts if is_failure(c)),
                emergency=sum(1 for c in attempts if c.change_type == ChangeType.EMERGENCY),
                lead_time_hours=_median(lead_time_hours(c) for c in deployments),
                recovery_hours=_median(recovery_hours(c) for c in changes if _in(c.failed_at, start, end)),
            )
        )
        day += timedelta(days=1)
    return out
