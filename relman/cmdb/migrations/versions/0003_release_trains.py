"""Release trains: a change is a `release` (one service) or a `train`; a train's components
are `change_component` rows, one per service. Existing changes are releases.

A train's CI versions are `ci_version` rows as a release's are (with the train's release id),
and the relationships between its components' CIs are the `relationship` rows as they are.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("change", sa.Column("kind", sa.String(length=16), nullable=False, server_default="release"))
    op.create_table(
        "change_component",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("ci_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("previous_version", sa.String(length=64), nullable=True),
        sa.Column("commit", sa.String(length=40), nullable=True),
        sa.Column("artifact_digest", sa.String(length=64), nullable=True),
        sa.Column("deployed", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("production_at", TIMESTAMP, nullable=True),
        sa.Column("failed_at", TIMESTAMP, nullable=True),
        sa.Column("recovered_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["change_id"],
            ["change.id"],
            name=op.f("fk_change_component_change_id_change"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ci_id"],
            ["configuration_item.id"],
            name=op.f("fk_change_component_ci_id_configuration_item"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_component")),
        sa.UniqueConstraint("change_id", "service", name="uq_change_component_service"),
    )
    op.create_index(
        op.f("ix_change_component_production_at"), "change_component", ["production_at"], unique=False
    )
    op.create_index(op.f("ix_change_component_service"), "change_component", ["service"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_change_component_service"), table_name="change_component")
    op.drop_index(op.f("ix_change_component_production_at"), table_name="change_component")
    op.drop_table("change_component")
    with op.batch_alter_table("change") as batch:
        batch.drop_column("kind")
