"""Typed records the CMDB store returns (never ORM objects) and its admin inputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr
from icalendar import vRecur
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from relman.contracts import (
    ChangeType,
    CloseCode,
    Comment,
    Criticality,
    Environment,
    Feedback,
    ServiceName,
    ShortText,
    TimeWindow,
    UserName,
    WindowKind,
)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CiSpec(Record):
    """A configuration item as an operator or the catalog declares it."""

    name: ShortText
    ci_class: str = Field(default="service", pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    description: Comment = ""
    environment: Environment | None = None
    owner: UserName | None = None
    criticality: Criticality = Criticality.MEDIUM


class CiRecord(Record):
    name: str
    ci_class: str
    description: str
    environment: str | None
    owner: str | None
    criticality: Criticality
    current_version: str | None
    row_version: int
    updated_at: datetime


class RelationshipRecord(Record):
    parent: str
    child: str
    type: str
    label: str
    """`parent label child`, read forward, e.g. "depends on"."""


class CiVersionRecord(Record):
    ci: str
    version: str
    artifact_digest: str | None
    commit: str | None
    deployed_at: datetime
    release_id: str | None


class ApprovalRecord(Record):
    gate: str
    approver: str
    on_behalf_of: str | None
    decision: str
    comment: str
    approved_hash: str
    at: datetime


class ChangeRecord(Record):
    """One change (one release) as the CMDB keeps it; the DORA metrics read these."""

    release_id: str
    service: str
    """The service released; a train's name for a train."""
    version: str
    change_type: ChangeType
    kind: str = "release"
    """`release`, or `train` (several components: `ChangeDetail.components`)."""
    risk: str = "medium"
    status: str = "requested"
    outcome: str | None = None
    close_code: CloseCode | None = None
    requested_by: str = "unknown"
    title: str = ""
    ci: str | None = None
    commit: str | None = None
    previous_version: str | None = None
    artifact_digest: str | None = None
    requested_at: datetime
    committed_at: datetime | None = None
    production_at: datetime | None = None
    failed_at: datetime | None = None
    """A failure in production (dark launch or go-live), not in staging."""
    recovered_at: datetime | None = None
    closed_at: datetime | None = None
    reason: str = ""


class ReviewRecordOut(Record):
    kpis: dict[str, float]
    feedback: list[Feedback]
    at: datetime


class ComponentRow(Record):
    """One component of a train's change."""

    service: str
    ci: str | None
    version: str
    previous_version: str | None = None
    commit: str | None = None
    artifact_digest: str | None = None
    deployed: bool = False
    outcome: str | None = None
    production_at: datetime | None = None
    failed_at: datetime | None = None
    recovered_at: datetime | None = None


class ChangeDetail(ChangeRecord):
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    review: ReviewRecordOut | None = None
    components: list[ComponentRow] = Field(default_factory=list)
    """A train's components, in the request's order (empty for a release)."""
    relationships: list[RelationshipRecord] = Field(default_factory=list)
    """A train's: the relationships between its components' CIs, as the CMDB has them now."""


class WindowSpec(TimeWindow):
    """A deployment window [start, end); `service`/`environment` None means every one.

    A recurring window carries an RFC 5545 `rrule` (`FREQ=WEEKLY;BYDAY=FR`): `start`/`end`
    are its first occurrence. With an IANA `timezone` every occurrence keeps the first one's
    local wall-clock start and local duration across DST changes (Fri 18:00 to Mon 06:00
    Europe/Paris is 60 local hours: 59 or 61 real ones over the March and October changes);
    a naive `start`/`end` is then read as local time in that zone. Without a zone the rule
    runs in UTC. `relman.cmdb.calendar` expands and decides over them.
    """

    model_config = Record.model_config

    id: str | None = Field(default=None, min_length=1, max_length=200)
    """Stable id, filled by the store; None for a window not stored yet."""
    name: ShortText
    kind: WindowKind
    service: ServiceName | None = None
    environment: Environment | None = None
    reason: Comment = ""
    created_by: UserName
    rrule: str | None = None
    """An RFC 5545 recurrence rule (without `RRULE:`), kept in icalendar's canonical order."""
    timezone: str | None = None
    """An IANA time zone (`Europe/Paris`) for the rule's wall-clock times; None means UTC."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, timezone: str | None) -> str | None:
        if timezone is not None:
            zone_info(timezone)
        return timezone

    @field_validator("rrule")
    @classmethod
    def _valid_rrule(cls, rrule: str | None) -> str | None:
        return None if rrule is None else canonical_rrule(rrule)

    @model_validator(mode="before")
    @classmethod
    def _zoned(cls, data: Any) -> Any:
        """A naive start/end of a zoned window is local time there: made aware once, here."""
        if not isinstance(data, dict) or not isinstance(data.get("timezone"), str):
            return data
        try:
            zone = ZoneInfo(data["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            return data  # the field validator says so, in one line
        data = dict(data)
        for key in ("start", "end"):
            at = data.get(key)
            if isinstance(at, str):
                try:
                    at = datetime.fromisoformat(at)
                except ValueError:
                    continue  # pydantic reports it
            if isinstance(at, datetime) and at.tzinfo is None:
                data[key] = at.replace(tzinfo=zone)
        return data


_RRULE_FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY")


def zone_info(timezone: str) -> ZoneInfo:
    """The IANA zone named `timezone`; ValueError (one line) when there is none."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {timezone!r} (e.g. 'Europe/Paris')") from None


def canonical_rrule(rrule: str) -> str:
    """An RFC 5545 RRULE value in icalendar's canonical order; ValueError (one line) if garbage."""
    text = rrule.strip().removeprefix("RRULE:").strip()
    problem = f"not an RFC 5545 RRULE: {text[:80]!r} (e.g. 'FREQ=WEEKLY;BYDAY=FR')"
    if not text or "\n" in text or "\r" in text:
        raise ValueError(problem)
    try:
        canonical = vRecur.from_ical(text).to_ical().decode()
        rrulestr(canonical, dtstart=datetime(2000, 1, 1, tzinfo=UTC))
    except Exception as exc:  # icalendar and dateutil raise a variety of errors on garbage
        detail = " ".join(str(exc).split())[:120]
        raise ValueError(f"{problem}: {detail}" if detail else problem) from None
    freq = vRecur.from_ical(canonical).get("FREQ", [""])[0]
    if freq not in _RRULE_FREQS:
        raise ValueError(f"RRULE FREQ must be one of {', '.join(_RRULE_FREQS)}, not {freq or 'missing'}")
    return canonical


class AuditEntry(Record):
    at: datetime
    actor: str
    action: str
    subject: str
    release_id: str | None
    detail: dict[str, Any]
    idempotency_key: str
