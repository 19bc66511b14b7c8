"""Schema revisions of the CMDB: Alembic migrations (relman/cmdb/migrations/) are the
schema's source of truth; `models.py` must equal their head (a test compares them).

- An empty database is migrated to head on first use.
- A database created before migrations existed (relman's tables, no `alembic_version`)
  is brought to revision 0001 (tables and columns 0001 has that it lacks are added, rows
  kept) and stamped 0001.
- A database at an older revision is refused with a one-line error naming
  `relman cmdb upgrade`: the CMDB is a database people keep, so relman never changes
  its schema behind their back (nor the worker on start); they back it up and upgrade.
  Meanwhile the activities retry (CmdbSchemaOutdated is a CmdbUnavailable).
- A database at a revision this relman does not know (a newer relman wrote it) is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from relman.cmdb.errors import CmdbUnavailable
from relman.cmdb.models import metadata

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"
BASELINE = "0001"
"""The schema relman had when migrations began; databases without a revision are at it."""


class CmdbSchemaOutdated(CmdbUnavailable):
    """The database's schema revision is not the one this relman needs. Retryable on
    purpose: a release's CMDB activity waits (retrying, the message in its failure) until
    someone runs `relman cmdb upgrade`, instead of failing the release."""

    type = "CmdbSchemaOutdated"


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The revision this relman's schema is at."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has none (empty, or from before migrations)."""
    return MigrationContext.configure(conn).get_current_revision()


def _is_legacy(conn: Connection) -> bool:
    """relman's tables without a revision: created by `create_all` before migrations."""
    return bool(set(inspect(conn).get_table_names()) & set(metadata.tables))


def _adopt(conn: Connection) -> None:
    """Bring a database from before migrations to revision 0001 and stamp it."""
    baseline: Any = ScriptDirectory.from_config(config()).get_revision(BASELINE).module
    baseline.adopt(Operations(MigrationContext.configure(conn)), conn)
    command.stamp(config(conn), BASELINE)


def ensure_current(conn: Connection, url: str) -> None:
    """Create an empty database at head, adopt one from before migrations, refuse an older one."""
    current = current_revision(conn)
    if current is None:
        if not _is_legacy(conn):
            command.upgrade(config(conn), "head")
            return
        _adopt(conn)
        current = BASELINE
    needed = head()
    if current == needed:
        return
    known = {s.revision for s in ScriptDirectory.from_config(config()).walk_revisions()}
    if current not in known:
        raise CmdbSchemaOutdated(
            f"the CMDB at {url} is at schema revision {current}, unknown to this relman "
            f"(which needs {needed}): a newer relman wrote it; run that one"
        )
    raise CmdbSchemaOutdated(
        f"the CMDB at {url} is at schema revision {current}, this relman needs {needed}: "
        "run `relman cmdb upgrade` (back it up first)"
    )


def upgrade(conn: Connection) -> tuple[str | None, str]:
    """Apply every pending migration: (revision before, revision after)."""
    before = current_revision(conn)
    if before is None and _is_legacy(conn):
        _adopt(conn)
    command.upgrade(config(conn), "head")
    after = current_revision(conn)
    assert after is not None
    return before, after
