"""The evidence activities: build a release's (or a train's) in-toto statement, sign it, keep
it in the CMDB.

The envelope is written once per release: a retried activity finds its audit row and a
second release-closing write (another key, a replay) finds the release's envelope, and both
return what is stored, so the evidence of a release never changes after it is written.

Before signing, the activity reads the audit log's newest row (`CmdbStore.audit_head`) into
the predicate's `audit_anchor`: the signed envelope then pins the hash chain up to that row,
which `relman cmdb verify-audit` checks (see `CmdbStore.verify_audit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from temporalio import activity

from relman.activities.cmdb import store_call
from relman.cmdb.store import CmdbStore
from relman.contracts import Activity, EvidenceInput, EvidenceRecord
from relman.contracts.train import TrainEvidenceInput
from relman.identity.evidence import build_statement, envelope_digest, sign_envelope
from relman.identity.evidence_train import build_train_statement
from relman.identity.keys import Signer

T = TypeVar("T")
log = structlog.get_logger(__name__)


class EvidenceActivities:
    """Evidence writing with the worker's evidence key; the worker registers `all()`."""

    def __init__(self, store: CmdbStore, signer: Signer) -> None:
        self.store = store
        self.signer = signer

    def all(self) -> list[Callable[..., Any]]:
        return [self.write_evidence, self.write_train_evidence]

    @activity.defn(name=Activity.WRITE_EVIDENCE)
    async def write_evidence(self, inp: EvidenceInput) -> EvidenceRecord:
        """Sign the release's evidence, anchored to the audit log's newest row, with the
        worker's key and store it in the CMDB."""
        anchor = await store_call(self.store.audit_head)
        return await self._keep(
            inp.idempotency_key, inp.release_id, build_statement(inp.status, inp.close_code, anchor)
        )

    @activity.defn(name=Activity.WRITE_TRAIN_EVIDENCE)
    async def write_train_evidence(self, inp: TrainEvidenceInput) -> EvidenceRecord:
        """Sign a train's evidence (every component's artifacts, the train's gates, each
        component's stages and decisions), anchored as a release's, and store it in the CMDB."""
        anchor = await store_call(self.store.audit_head)
        return await self._keep(inp.idempotency_key, inp.release_id, build_train_statement(inp, anchor))

    async def _keep(self, key: str, release_id: str, statement: dict[str, Any]) -> EvidenceRecord:
        envelope = sign_envelope(statement, self.signer)
        record = EvidenceRecord(envelope_sha256=envelope_digest(envelope), key_id=self.signer.key_id)
        stored = await store_call(lambda: self.store.put_evidence(key, release_id, envelope, record))
        log.info(
            "cmdb.evidence_written",
            key=key,
            sha256=stored.envelope_sha256,
            key_id=stored.key_id,
        )
        return stored
