"""Typed records the CMDB store returns (never ORM objects) and its admin inputs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
    version: str
    change_type: ChangeType
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


class ChangeDetail(ChangeRecord):
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    review: ReviewRecordOut | None = None


class WindowSpec(TimeWindow):
    """A deployment window [start, end); `service`/`environment` None means every one."""

    model_config = Record.model_config

    name: ShortText
    kind: WindowKind
    service: ServiceName | None = None
    environment: Environment | None = None
    reason: Comment = ""
    created_by: UserName


class AuditEntry(Record):
    at: datetime
    actor: str
    action: str
    subject: str
    release_id: str | None
    detail: dict[str, Any]
    idempotency_key: str
