"""Alembic environment: runs on the connection relman/cmdb/migrate.py hands over (inside
its transaction), or on `sqlalchemy.url` when alembic's own command line runs it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from relman.cmdb.models import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(connection=conn, target_metadata=metadata, compare_type=True)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url") or "").begin() as conn:
        _run(conn)
