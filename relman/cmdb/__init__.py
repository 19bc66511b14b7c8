"""The CMDB: configuration items, changes, windows, audit log and DORA metrics.

Never imports temporalio nor relman.workflows; the activities wrap it.
"""

from relman.cmdb.dora import DoraDay, DoraMetrics
from relman.cmdb.errors import CmdbConflict, CmdbError, CmdbInvalid, CmdbNotFound, CmdbUnavailable
from relman.cmdb.records import (
    ApprovalRecord,
    AuditEntry,
    ChangeDetail,
    ChangeRecord,
    CiRecord,
    CiSpec,
    CiVersionRecord,
    ComponentRow,
    RelationshipRecord,
    ReviewRecordOut,
    WindowSpec,
)
from relman.cmdb.store import CmdbStore, decide

__all__ = [
    "ApprovalRecord",
    "AuditEntry",
    "ChangeDetail",
    "ChangeRecord",
    "CiRecord",
    "CiSpec",
    "CiVersionRecord",
    "CmdbConflict",
    "CmdbError",
    "CmdbInvalid",
    "CmdbNotFound",
    "CmdbStore",
    "CmdbUnavailable",
    "ComponentRow",
    "DoraDay",
    "DoraMetrics",
    "RelationshipRecord",
    "ReviewRecordOut",
    "WindowSpec",
    "decide",
]
