"""The schema relman had when migrations began (commit ba668503): every table, the
audit log's append-only triggers, and PostgreSQL's audit chain head function.

Frozen: later schema changes are later revisions; nothing here reads relman.cmdb.models.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op as alembic_op
from alembic.operations import Operations
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for op in ("UPDATE", "DELETE")
]
PG_TRIGGER = [
    """CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
]
PG_CHAIN_HEAD = """CREATE OR REPLACE FUNCTION audit_chain_head(OUT next_id bigint, OUT prev_hash text)
    LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1380794709, 'audit_log'::regclass::oid::int);
    next_id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    SELECT a.row_hash INTO prev_hash FROM audit_log a ORDER BY a.id DESC LIMIT 1;
    -- After legacy rows (no hash) the chain starts at the genesis hash.
    prev_hash := coalesce(prev_hash, repeat('0', 64));
END $$"""


def _tables(op: Any, existing: set[str]) -> None:
    """Create the tables of revision 0001 that are not in `existing`."""
    if "audit_log" not in existing:
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("at", TIMESTAMP, nullable=False),
            sa.Column("actor", sa.String(length=64), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("subject", sa.String(length=200), nullable=False),
            sa.Column("release_id", sa.String(length=128), nullable=True),
            sa.Column("detail", JSON, nullable=False),
            sa.Column("idempotency_key", sa.String(length=250), nullable=False),
            sa.Column("prev_hash", sa.String(length=64), nullable=True),
            sa.Column("row_hash", sa.String(length=64), nullable=True),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
            sa.UniqueConstraint("idempotency_key", name=op.f("uq_audit_log_idempotency_key")),
        )
        op.create_index("ix_audit_log_release", "audit_log", ["release_id", "id"], unique=False)
    if "configuration_item" not in existing:
        op.create_table(
            "configuration_item",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("ci_class", sa.String(length=64), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            sa.Column("environment", sa.String(length=32), nullable=True),
            sa.Column("owner", sa.String(length=64), nullable=True),
            sa.Column("criticality", sa.String(length=32), nullable=False),
            sa.Column("current_version", sa.String(length=64), nullable=True),
            sa.Column("row_version", sa.Integer(), nullable=False),
            sa.Column("updated_at", TIMESTAMP, nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_configuration_item")),
            sa.UniqueConstraint("name", name=op.f("uq_configuration_item_name")),
        )
    if "deployment_window" not in existing:
        op.create_table(
            "deployment_window",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=100), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("service", sa.String(length=64), nullable=True),
            sa.Column("environment", sa.String(length=32), nullable=True),
            sa.Column("start_at", TIMESTAMP, nullable=False),
            sa.Column("end_at", TIMESTAMP, nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("created_by", sa.String(length=64), nullable=False),
            sa.CheckConstraint("end_at > start_at", name=op.f("ck_deployment_window_end_after_start")),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_window")),
            sa.UniqueConstraint("name", name=op.f("uq_deployment_window_name")),
        )
        op.create_index(op.f("ix_deployment_window_end_at"), "deployment_window", ["end_at"], unique=False)
    if "environment_lease" not in existing:
        op.create_table(
            "environment_lease",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("service", sa.String(length=64), nullable=False),
            sa.Column("environment", sa.String(length=32), nullable=False),
            sa.Column("holder", sa.String(length=128), nullable=False),
            sa.Column("acquired_at", TIMESTAMP, nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_environment_lease")),
            sa.UniqueConstraint("service", "environment", name="uq_lease_service_env"),
        )
    if "evidence" not in existing:
        op.create_table(
            "evidence",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("release_id", sa.String(length=128), nullable=False),
            sa.Column("envelope", JSON, nullable=False),
            sa.Column("sha256", sa.String(length=64), nullable=False),
            sa.Column("key_id", sa.String(length=64), nullable=False),
            sa.Column("at", TIMESTAMP, nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_evidence")),
            sa.UniqueConstraint("release_id", name=op.f("uq_evidence_release_id")),
        )
    if "relationship_type" not in existing:
        op.create_table(
            "relationship_type",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("forward_label", sa.String(length=100), nullable=False),
            sa.Column("reverse_label", sa.String(length=100), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_relationship_type")),
            sa.UniqueConstraint("name", name=op.f("uq_relationship_type_name")),
        )
    if "change" not in existing:
        op.create_table(
            "change",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("release_id", sa.String(length=128), nullable=False),
            sa.Column("ci_id", sa.Integer(), nullable=True),
            sa.Column("service", sa.String(length=64), nullable=False),
            sa.Column("version", sa.String(length=64), nullable=False),
            sa.Column("change_type", sa.String(length=16), nullable=False),
            sa.Column("risk", sa.String(length=16), nullable=False),
            sa.Column("status", sa.String(length=32), nullable=False),
            sa.Column("outcome", sa.String(length=32), nullable=True),
            sa.Column("close_code", sa.String(length=32), nullable=True),
            sa.Column("requested_by", sa.String(length=64), nullable=False),
            sa.Column("title", sa.String(length=200), nullable=False),
            sa.Column("commit", sa.String(length=40), nullable=True),
            sa.Column("previous_version", sa.String(length=64), nullable=True),
            sa.Column("artifact_digest", sa.String(length=64), nullable=True),
            sa.Column("requested_at", TIMESTAMP, nullable=False),
            sa.Column("committed_at", TIMESTAMP, nullable=True),
            sa.Column("production_at", TIMESTAMP, nullable=True),
            sa.Column("failed_at", TIMESTAMP, nullable=True),
            sa.Column("recovered_at", TIMESTAMP, nullable=True),
            sa.Column("closed_at", TIMESTAMP, nullable=True),
            sa.Column("updated_at", TIMESTAMP, nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(
                ["ci_id"],
                ["configuration_item.id"],
                name=op.f("fk_change_ci_id_configuration_item"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_change")),
            sa.UniqueConstraint("release_id", name=op.f("uq_change_release_id")),
        )
        op.create_index(op.f("ix_change_production_at"), "change", ["production_at"], unique=False)
        op.create_index(op.f("ix_change_requested_at"), "change", ["requested_at"], unique=False)
        op.create_index(op.f("ix_change_service"), "change", ["service"], unique=False)
    if "ci_version" not in existing:
        op.create_table(
            "ci_version",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("ci_id", sa.Integer(), nullable=False),
            sa.Column("version", sa.String(length=64), nullable=False),
            sa.Column("artifact_digest", sa.String(length=64), nullable=True),
            sa.Column("commit", sa.String(length=40), nullable=True),
            sa.Column("deployed_at", TIMESTAMP, nullable=False),
            sa.Column("release_id", sa.String(length=128), nullable=True),
            sa.ForeignKeyConstraint(
                ["ci_id"],
                ["configuration_item.id"],
                name=op.f("fk_ci_version_ci_id_configuration_item"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_ci_version")),
            sa.UniqueConstraint("ci_id", "version", name="uq_ci_version_ci_version"),
        )
    if "relationship" not in existing:
        op.create_table(
            "relationship",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("parent_id", sa.Integer(), nullable=False),
            sa.Column("child_id", sa.Integer(), nullable=False),
            sa.Column("type_id", sa.Integer(), nullable=False),
            sa.ForeignKeyConstraint(
                ["child_id"],
                ["configuration_item.id"],
                name=op.f("fk_relationship_child_id_configuration_item"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["parent_id"],
                ["configuration_item.id"],
                name=op.f("fk_relationship_parent_id_configuration_item"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["type_id"], ["relationship_type.id"], name=op.f("fk_relationship_type_id_relationship_type")
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_relationship")),
            sa.UniqueConstraint("parent_id", "child_id", "type_id", name="uq_relationship_edge"),
        )
        op.create_index(op.f("ix_relationship_child_id"), "relationship", ["child_id"], unique=False)
    if "approval" not in existing:
        op.create_table(
            "approval",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("change_id", sa.Integer(), nullable=False),
            sa.Column("gate", sa.String(length=16), nullable=False),
            sa.Column("approver", sa.String(length=64), nullable=False),
            sa.Column("on_behalf_of", sa.String(length=64), nullable=True),
            sa.Column("decision", sa.String(length=16), nullable=False),
            sa.Column("comment", sa.Text(), nullable=False),
            sa.Column("approved_hash", sa.String(length=64), nullable=False),
            sa.Column("at", TIMESTAMP, nullable=False),
            sa.ForeignKeyConstraint(
                ["change_id"], ["change.id"], name=op.f("fk_approval_change_id_change"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_approval")),
            sa.UniqueConstraint("change_id", "gate", "approver", "approved_hash", name="uq_approval_vote"),
        )
    if "review_record" not in existing:
        op.create_table(
            "review_record",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("change_id", sa.Integer(), nullable=False),
            sa.Column("kpis", JSON, nullable=False),
            sa.Column("feedback", JSON, nullable=False),
            sa.Column("at", TIMESTAMP, nullable=False),
            sa.ForeignKeyConstraint(
                ["change_id"],
                ["change.id"],
                name=op.f("fk_review_record_change_id_change"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_review_record")),
            sa.UniqueConstraint("change_id", name=op.f("uq_review_record_change_id")),
        )


def _audit_log_extras(op: Any, dialect: str, *, triggers: bool) -> None:
    if triggers:
        for statement in PG_TRIGGER if dialect == "postgresql" else SQLITE_TRIGGERS:
            op.execute(statement)
    if dialect == "postgresql":
        op.execute(PG_CHAIN_HEAD)


def upgrade() -> None:
    _tables(alembic_op, set())
    _audit_log_extras(alembic_op, alembic_op.get_bind().dialect.name, triggers=True)


def downgrade() -> None:
    for table in (
        "review_record", "approval", "relationship", "ci_version", "change", "relationship_type",
        "evidence", "environment_lease", "deployment_window", "configuration_item", "audit_log",
    ):  # fmt: skip
        alembic_op.drop_table(table)
    if alembic_op.get_bind().dialect.name == "postgresql":
        alembic_op.execute("DROP FUNCTION IF EXISTS audit_chain_head()")
        alembic_op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")


def adopt(op: Operations, conn: Connection) -> None:
    """Bring a database relman created before migrations (with `create_all`) to this
    revision, keeping its rows: the tables it lacks, the audit chain's columns (added
    after the log), the triggers of a new audit log, the chain head function."""
    existing = set(inspect(conn).get_table_names())
    _tables(op, existing)
    if "audit_log" in existing:
        have = {c["name"] for c in inspect(conn).get_columns("audit_log")}
        for column in ("prev_hash", "row_hash"):
            if column not in have:
                op.add_column("audit_log", sa.Column(column, sa.String(length=64), nullable=True))
    _audit_log_extras(op, conn.dialect.name, triggers="audit_log" not in existing)
