"""The evidence activity in an ActivityEnvironment: signs with the worker's key, stores once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from relman.activities.evidence import EvidenceActivities
from relman.cmdb import CmdbStore
from relman.contracts import CloseCode, EvidenceInput
from relman.identity.evidence import envelope_digest, verify_evidence
from relman.identity.keys import Signer
from tests.cmdb.helpers import Clock, make_store
from tests.identity.evidence_support import RELEASE_ID, Cast, closed_release


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        yield s


def evidence_input(cast: Cast) -> EvidenceInput:
    return EvidenceInput(
        release_id=RELEASE_ID, step="evidence", status=closed_release(cast), close_code=CloseCode.SUCCESSFUL
    )


async def test_writes_verifiable_evidence_once(store: CmdbStore) -> None:
    cast = Cast()
    acts, env = EvidenceActivities(store, cast.worker), ActivityEnvironment()
    inp = evidence_input(cast)
    record = await env.run(acts.write_evidence, inp)
    again = await env.run(acts.write_evidence, inp)  # a retry: same key, same row
    assert again == record and record.key_id == cast.worker.key_id

    stored = store.get_evidence(RELEASE_ID)
    assert stored is not None
    assert stored.envelope_sha256 == record.envelope_sha256 == envelope_digest(stored.envelope)
    assert store.count("evidence") == 1
    assert [e.action for e in store.audit(RELEASE_ID)] == ["evidence.write"]
    report = verify_evidence(stored.envelope, {"greeter": cast.trust()}, [cast.worker.public])
    assert report.ok, report.findings


async def test_evidence_of_a_release_never_changes(store: CmdbStore) -> None:
    cast = Cast()
    first = await ActivityEnvironment().run(
        EvidenceActivities(store, cast.worker).write_evidence, evidence_input(cast)
    )
    # Another step (or a worker with a rotated key) closing the same release again gets the
    # evidence already written, not a second, different envelope.
    other = EvidenceActivities(store, Signer.generate("worker"))
    inp = evidence_input(cast).model_copy(update={"step": "evidence-again"})
    second = await ActivityEnvironment().run(other.write_evidence, inp)
    assert second == first
    stored = store.get_evidence(RELEASE_ID)
    assert stored is not None and stored.key_id == cast.worker.key_id


def test_no_evidence_for_an_unknown_release(store: CmdbStore) -> None:
    assert store.get_evidence("release-nothing-1.0.0") is None
