"""SQLAlchemy tables of the CMDB.

The schema itself comes from the Alembic migrations (relman/cmdb/migrations/): these
classes must equal their head, which tests/cmdb/test_migrations.py checks. A schema
change is a change here AND a new revision there.

The store writes through Core statements on these tables (faster than ORM sessions
and explicit about upserts); the declarative classes give the schema one typed home.
Every time column is stored in UTC and read back as an aware UTC datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always UTC: naive input is taken as UTC, output is aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # SQLite hands back naive strings-turned-datetimes; they were written as UTC.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ConfigurationItem(Base):
    __tablename__ = "configuration_item"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    ci_class: Mapped[str] = mapped_column(String(64), default="service")
    description: Mapped[str] = mapped_column(Text, default="")
    environment: Mapped[str | None] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64))
    criticality: Mapped[str] = mapped_column(String(32), default="medium")
    current_version: Mapped[str | None] = mapped_column(String(64))
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    """Optimistic lock: bumped by every update; a writer that read an older value loses."""
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RelationshipType(Base):
    __tablename__ = "relationship_type"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    forward_label: Mapped[str] = mapped_column(String(100))
    reverse_label: Mapped[str] = mapped_column(String(100))


class Relationship(Base):
    """`parent <forward label> child`, e.g. checkout depends on payments-db."""

    __tablename__ = "relationship"
    __table_args__ = (UniqueConstraint("parent_id", "child_id", "type_id", name="uq_relationship_edge"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("configuration_item.id", ondelete="CASCADE"))
    child_id: Mapped[int] = mapped_column(ForeignKey("configuration_item.id", ondelete="CASCADE"), index=True)
    type_id: Mapped[int] = mapped_column(ForeignKey("relationship_type.id"))


class CiVersion(Base):
    __tablename__ = "ci_version"
    __table_args__ = (UniqueConstraint("ci_id", "version", name="uq_ci_version_ci_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ci_id: Mapped[int] = mapped_column(ForeignKey("configuration_item.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    artifact_digest: Mapped[str | None] = mapped_column(String(64))
    commit: Mapped[str | None] = mapped_column(String(40))
    deployed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    release_id: Mapped[str | None] = mapped_column(String(128))


class Change(Base):
    __tablename__ = "change"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="release", server_default="release")
    """`release` (one service), or `train`: `service` is then the train's name, `ci_id` NULL
    and `version` empty; its components are `change_component` rows."""
    ci_id: Mapped[int | None] = mapped_column(ForeignKey("configuration_item.id", ondelete="SET NULL"))
    service: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    change_type: Mapped[str] = mapped_column(String(16))
    risk: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    close_code: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    commit: Mapped[str | None] = mapped_column(String(40))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    artifact_digest: Mapped[str | None] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    committed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    production_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recovered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")


class ChangeComponent(Base):
    """One component (service) of a train's change: what it changed and how it ended."""

    __tablename__ = "change_component"
    __table_args__ = (UniqueConstraint("change_id", "service", name="uq_change_component_service"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("change.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    """Its place in the train's request."""
    service: Mapped[str] = mapped_column(String(64), index=True)
    ci_id: Mapped[int | None] = mapped_column(ForeignKey("configuration_item.id", ondelete="SET NULL"))
    version: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    commit: Mapped[str | None] = mapped_column(String(40))
    artifact_digest: Mapped[str | None] = mapped_column(String(64))
    deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(32))
    production_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    recovered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApprovalRow(Base):
    __tablename__ = "approval"
    __table_args__ = (
        UniqueConstraint("change_id", "gate", "approver", "approved_hash", name="uq_approval_vote"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("change.id", ondelete="CASCADE"))
    gate: Mapped[str] = mapped_column(String(16))
    approver: Mapped[str] = mapped_column(String(64))
    on_behalf_of: Mapped[str | None] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    approved_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeploymentWindow(Base):
    __tablename__ = "deployment_window"
    __table_args__ = (CheckConstraint("end_at > start_at", name="end_after_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(200), unique=True)
    """The window's stable id (WindowSpec.id): a uuid hex, or the id an imported .ics gave."""
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    service: Mapped[str | None] = mapped_column(String(64))
    """NULL: every service."""
    environment: Mapped[str | None] = mapped_column(String(32))
    """NULL: every environment."""
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    """The first occurrence's start (and end, below)."""
    end_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64))
    rrule: Mapped[str | None] = mapped_column(String(1000))
    """RFC 5545 recurrence rule; NULL: a one-off window."""
    timezone: Mapped[str | None] = mapped_column(String(64))
    """IANA zone of the rule's wall-clock times; NULL: UTC."""


class EnvironmentLease(Base):
    """Which release holds a service's environment: one release at a time rolls out."""

    __tablename__ = "environment_lease"
    __table_args__ = (UniqueConstraint("service", "environment", name="uq_lease_service_env"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(32))
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewRecord(Base):
    __tablename__ = "review_record"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("change.id", ondelete="CASCADE"), unique=True)
    kpis: Mapped[dict[str, Any]] = mapped_column(Json)
    feedback: Mapped[list[Any]] = mapped_column(Json)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class EvidenceRow(Base):
    """A release's signed evidence (a DSSE envelope), written once when the release closes."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[str] = mapped_column(String(128), unique=True)
    envelope: Mapped[dict[str, Any]] = mapped_column(Json)
    sha256: Mapped[str] = mapped_column(String(64))
    """Of the envelope's canonical JSON, as `relman.identity.evidence.envelope_digest` computes it."""
    key_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditLog(Base):
    """Append-only: triggers refuse UPDATE and DELETE on both dialects; hash-chained
    (relman/cmdb/audit_chain.py) so that edits made around the triggers show."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    release_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(Json)
    idempotency_key: Mapped[str] = mapped_column(String(250), unique=True)
    # Nullable: rows written before the chain existed keep NULL (the legacy prefix).
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


Index("ix_audit_log_release", AuditLog.release_id, AuditLog.id)

metadata = Base.metadata

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for op in ("UPDATE", "DELETE")
]
_PG_TRIGGER = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]


@event.listens_for(AuditLog.__table__, "after_create")
def _append_only(target: Any, connection: Connection, **kw: Any) -> None:
    statements = _PG_TRIGGER if connection.dialect.name == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        connection.execute(text(statement))
