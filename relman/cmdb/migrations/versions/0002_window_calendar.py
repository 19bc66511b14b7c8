"""Deployment windows become a change calendar: a stable string id (`uid`, filled with a
uuid hex for every existing window), an RFC 5545 `rrule` and an IANA `timezone`, and
names as long as WindowSpec allows (200). Existing windows keep their rows: one-off
windows in UTC, as they were.

Batch mode: SQLite cannot alter a column in place, so it copies the table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WINDOW = sa.table("deployment_window", sa.column("id", sa.Integer()), sa.column("uid", sa.String()))


def upgrade() -> None:
    with op.batch_alter_table("deployment_window") as batch:
        batch.add_column(sa.Column("uid", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("rrule", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch.alter_column(
            "name", existing_type=sa.String(length=100), type_=sa.String(length=200), existing_nullable=False
        )
    conn = op.get_bind()
    for (row_id,) in conn.execute(sa.select(WINDOW.c.id).where(WINDOW.c.uid.is_(None))).all():
        conn.execute(WINDOW.update().where(WINDOW.c.id == row_id).values(uid=uuid.uuid4().hex))
    with op.batch_alter_table("deployment_window") as batch:
        batch.alter_column("uid", existing_type=sa.String(length=200), nullable=False)
        batch.create_unique_constraint(op.f("uq_deployment_window_uid"), ["uid"])


def downgrade() -> None:
    with op.batch_alter_table("deployment_window") as batch:
        batch.drop_constraint(op.f("uq_deployment_window_uid"), type_="unique")
        batch.drop_column("timezone")
        batch.drop_column("rrule")
        batch.drop_column("uid")
        batch.alter_column(
            "name", existing_type=sa.String(length=200), type_=sa.String(length=100), existing_nullable=False
        )
