"""Release evidence: the signed DSSE envelope each release keeps, written once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.engine import Connection

from relman.cmdb.audit_log import EVIDENCE, AuditLogStore
from relman.cmdb.errors import CmdbInvalid
from relman.contracts import EvidenceRecord


class StoredEvidence(BaseModel):
    """A release's evidence as the CMDB keeps it."""

    envelope: dict[str, Any]
    envelope_sha256: str
    key_id: str
    at: datetime


_EVIDENCE_RECORD = (EVIDENCE.c.sha256.label("envelope_sha256"), EVIDENCE.c.key_id)


class EvidenceStore(AuditLogStore):
    def _evidence_record(self, conn: Connection, release_id: str) -> EvidenceRecord | None:
        row = conn.execute(select(*_EVIDENCE_RECORD).where(EVIDENCE.c.release_id == release_id)).first()
        return None if row is None else EvidenceRecord.model_validate(row, from_attributes=True)

    def put_evidence(
        self, key: str, release_id: str, envelope: dict[str, Any], record: EvidenceRecord
    ) -> EvidenceRecord:
        """Keep a release's signed evidence and return what is kept: the first envelope of a
        release stays, so a retry, a replay or a second close all get the same evidence."""
        with self._write() as conn:
            kept = self._evidence_record(conn, release_id)
            if kept is None and self._claim(
                conn,
                key,
                actor="relman",
                action="evidence.write",
                subject=release_id,
                release_id=release_id,
                detail={"sha256": record.envelope_sha256, "key_id": record.key_id},
            ):
                conn.execute(
                    self._insert(EVIDENCE)
                    .values(
                        release_id=release_id,
                        envelope=envelope,
                        sha256=record.envelope_sha256,
                        key_id=record.key_id,
                        at=self._clock(),
                    )
                    .on_conflict_do_nothing(index_elements=["release_id"])
                )
                kept = self._evidence_record(conn, release_id)
        if kept is None:
            raise CmdbInvalid(
                f"idempotency key {key} was used by another write, not by evidence of {release_id}"
            )
        return kept

    def get_evidence(self, release_id: str) -> StoredEvidence | None:
        """The signed evidence of a release, as written when it closed."""
        stmt = select(EVIDENCE.c.envelope, *_EVIDENCE_RECORD, EVIDENCE.c.at)
        with self._read() as conn:
            row = conn.execute(stmt.where(EVIDENCE.c.release_id == release_id)).first()
        return None if row is None else StoredEvidence.model_validate(row, from_attributes=True)
