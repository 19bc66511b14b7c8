"""DORA metrics over CMDB change rows: pure functions, no I/O.

One definition of a deployment, used by every figure:

- a *deployment* is a change that reached production users: it went live at 100 %
  (`production_at`), or it was rolled back, aborted or cancelled after a dark-launch stage
  with percent > 0 had been exposed (`failed_at`, which the workflow sets exactly then).
  Exposure to the allow-list alone (0 % plus named internal people) is not a deployment:
  internal people are not production users. A rejected, expired or cancelled-before-users
  change is not a deployment either;
- its time is `production_at`, else `failed_at`; a deployment counts in the period
  [since, until) its time falls in;
- a *failed deployment* is a deployment with `failed_at` (rolled back, aborted or cancelled
  after users saw it, before or after 100 %).

Over the deployments of the period:

- deployment frequency = deployments / days in the period (failed ones included: DORA
  counts "the number of deployments over a given period");
- change lead time = median of `production_at - (committed_at or requested_at)`, in hours,
  over the deployments that went live at 100 % (one rolled back during the dark launch
  never finished deploying, so it has no lead time);
- change fail rate = failed deployments / deployments;
- failed deployment recovery time = median of `recovered_at - failed_at`, in hours, over
  the failed deployments that recovered;
- deployment rework rate = emergency changes among the deployments / deployments (DORA:
  "deployments that are unplanned but happen as a result of an incident in production").

A release train (several components released as one change) counts as one deployment of
each service it changed: each component that reached production users is a deployment of its
service, at its own `production_at` (else `failed_at`), failed when that component failed
(`failed_at`), as for a release; its lead time runs from the train's commit (else request)
time, its recovery to the component's `recovered_at` (else the train's). A component that
never reached production users is not a deployment. `--service` sees a train's component of
that service.

Rates and medians are None when there is nothing to measure. Wording from DORA's guide,
https://dora.dev/guides/dora-metrics-four-keys/ (quoted in the README).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from statistics import median

from pydantic import BaseModel, ConfigDict

from relman.cmdb.records import ChangeRecord, ComponentRow
from relman.contracts import ChangeType

DEFINITIONS = """\
A deployment is a change that reached production users: it went live at 100%, or it was
rolled back, aborted or cancelled after a dark-launch stage above 0% was exposed. The
allow-list stage alone (0% plus named internal people) is not a deployment.

A failed deployment is one rolled back, aborted or cancelled after users saw it.

A release train counts as one deployment of each service it changed (each component that
reached production users), failed per component as a release is.

\b
Every figure is over the deployments of the period:
  deployment frequency  deployments per day, failed ones included
  lead time             median hours from commit (else request) to 100%,
                        of the deployments that reached 100%
  change fail rate      failed deployments / deployments
  recovery time         median hours from failure to recovery,
                        of the failed deployments that recovered
  rework rate           emergency deployments / deployments

\b
DORA's wording: https://dora.dev/guides/dora-metrics-four-keys/ (quoted in the README)."""
"""The definitions in short, for `relman metrics --help` (click keeps a `\\b` paragraph as is)."""


class DoraDay(BaseModel):
    model_config = ConfigDict(frozen=True)

    day: date
    deployments: int
    """Deployments whose time falls on this UTC day, failed ones included."""
    failures: int
    """Failed deployments among them."""
    emergency: int
    lead_time_hours: float | None
    recovery_hours: float | None

    @property
    def successful(self) -> int:
        return self.deployments - self.failures


class DoraMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    since: datetime
    until: datetime
    service: str | None
    deployments: int
    failures: int
    deployment_frequency_per_day: float
    lead_time_hours: float | None
    change_fail_rate: float | None
    recovery_hours: float | None
    rework_rate: float | None
    series: list[DoraDay]


def component_deployment(train: ChangeRecord, component: ComponentRow) -> ChangeRecord:
    """One component of a train as the change DORA counts: a change of the component's service
    with the train's request, type and commit time, and the component's own production times."""
    return train.model_copy(
        update={
            "service": component.service,
            "version": component.version,
            "ci": component.ci,
            "commit": component.commit or train.commit,
            "previous_version": component.previous_version,
            "artifact_digest": component.artifact_digest,
            "outcome": component.outcome or train.outcome,
            "production_at": component.production_at,
            "failed_at": component.failed_at,
            "recovered_at": component.recovered_at
            or (train.recovered_at if component.failed_at is not None else None),
        }
    )


def deployed_at(c: ChangeRecord) -> datetime | None:
    """When the change counts as a deployment; None when it never reached production users."""
    return c.production_at or c.failed_at


def is_failure(c: ChangeRecord) -> bool:
    return c.failed_at is not None


def lead_time_hours(c: ChangeRecord) -> float | None:
    if c.production_at is None:
        return None
    start = c.committed_at or c.requested_at
    return (c.production_at - start).total_seconds() / 3600


def recovery_hours(c: ChangeRecord) -> float | None:
    if c.failed_at is None or c.recovered_at is None:
        return None
    return (c.recovered_at - c.failed_at).total_seconds() / 3600


def deployments(changes: Iterable[ChangeRecord], since: datetime, until: datetime) -> list[ChangeRecord]:
    """The changes that are deployments in [since, until)."""
    since, until = _utc(since), _utc(until)
    return [c for c in changes if (at := deployed_at(c)) is not None and since <= _utc(at) < until]


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
    deployed = deployments(rows, since, until)
    failed = [c for c in deployed if is_failure(c)]
    days = (until - since).total_seconds() / 86400
    return DoraMetrics(
        since=since,
        until=until,
        service=service,
        deployments=len(deployed),
        failures=len(failed),
        deployment_frequency_per_day=len(deployed) / days,
        lead_time_hours=_median(lead_time_hours(c) for c in deployed),
        change_fail_rate=len(failed) / len(deployed) if deployed else None,
        recovery_hours=_median(recovery_hours(c) for c in failed),
        rework_rate=(
            sum(1 for c in deployed if c.change_type == ChangeType.EMERGENCY) / len(deployed)
            if deployed
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
        midnight = datetime.combine(day, datetime.min.time(), UTC)
        deployed = deployments(changes, max(since, midnight), min(until, midnight + timedelta(days=1)))
        failed = [c for c in deployed if is_failure(c)]
        out.append(
            DoraDay(
                day=day,
                deployments=len(deployed),
                failures=len(failed),
                emergency=sum(1 for c in deployed if c.change_type == ChangeType.EMERGENCY),
                lead_time_hours=_median(lead_time_hours(c) for c in deployed),
                recovery_hours=_median(recovery_hours(c) for c in failed),
            )
        )
        day += timedelta(days=1)
    return out
