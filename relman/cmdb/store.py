"""The CMDB store: SQLAlchemy 2 (sync) over SQLite (default) or PostgreSQL.

`CmdbStore` is one engine (engine.py: pragmas, transactions, the schema check of
migrate.py) with a class per table group over it:

- audit_log.py: the idempotency claim every write begins with; the hash-chained log
- changes.py: change records, closing a change, DORA's inputs
- trains.py: a release train's change and its components
- cis.py: configuration items, versions, relationships
- windows.py: deployment windows (the pure window rule, `decide`, is calendar.py's)
- leases.py: environment leases
- evidence_store.py: the signed release evidence

Every public method is one short transaction. The names below are re-exported so
callers keep importing them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from relman.cmdb.audit_log import (
    AUDIT,
    EVIDENCE,
    SQLITE_CLAIM,
    chain_row,
    claim_params,
    evidence_anchor,
    scrub,
)
from relman.cmdb.calendar import closing_kinds, decide
from relman.cmdb.changes import (
    APPROVAL,
    CHANGE,
    CLOSED,
    DEPLOYED_OUTCOMES,
    REVIEW,
    VERSION,
    ChangeStatements,
)
from relman.cmdb.cis import CI, REL, REL_TYPE, CiStore
from relman.cmdb.engine import DEFAULT_RELATIONSHIP_TYPES, now_utc
from relman.cmdb.evidence_store import EvidenceStore, StoredEvidence
from relman.cmdb.leases import LEASE, LeaseStore
from relman.cmdb.migrate import CmdbSchemaOutdated
from relman.cmdb.trains import TrainStore
from relman.cmdb.windows import WINDOW, WindowAdded, WindowCollision, WindowStore

# The names earlier code and tests import from relman.cmdb.store.
_chain_row = chain_row
_evidence_anchor = evidence_anchor
_scrub = scrub
_SQLITE_CLAIM = SQLITE_CLAIM

__all__ = [
    "APPROVAL",
    "AUDIT",
    "CHANGE",
    "CI",
    "CLOSED",
    "DEFAULT_RELATIONSHIP_TYPES",
    "DEPLOYED_OUTCOMES",
    "EVIDENCE",
    "LEASE",
    "REL",
    "REL_TYPE",
    "REVIEW",
    "VERSION",
    "WINDOW",
    "CmdbSchemaOutdated",
    "CmdbStore",
    "StoredEvidence",
    "WindowAdded",
    "WindowCollision",
    "claim_params",
    "closing_kinds",
    "decide",
]


class CmdbStore(TrainStore, CiStore, WindowStore, LeaseStore, EvidenceStore):
    """The CMDB. Thread-safe; every public method is one short transaction."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        clock: Callable[[], datetime] = now_utc,
        busy_timeout_s: float = 30.0,
        connect_timeout_s: int = 5,
    ) -> None:
        """`schema` (PostgreSQL only) puts every table in that schema, created if absent."""
        super().__init__(
            url,
            schema=schema,
            clock=clock,
            busy_timeout_s=busy_timeout_s,
            connect_timeout_s=connect_timeout_s,
        )
        self._sql = ChangeStatements(self.dialect)
        self.fast_path = True
