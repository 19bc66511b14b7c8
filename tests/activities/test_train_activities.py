"""The train's CMDB and evidence activities in an ActivityEnvironment, on SQLite and PostgreSQL:
retries write nothing twice, what the CMDB refuses is not retried, the evidence verifies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.cmdb import CmdbActivities
from relman.activities.evidence import EvidenceActivities
from relman.cmdb import CmdbStore
from relman.contracts import CloseCode, Risk
from relman.contracts.train import TrainChangeInput
from relman.identity.evidence import envelope_digest, verify_evidence
from relman.identity.keys import Signer
from tests.cmdb.helpers import Clock, make_store, open_input
from tests.cmdb.train_support import T0, TRAIN_ID, TrainCast, close_input, train_evidence_input, train_request


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock(T0)) as s:
        yield s


def change(step: str, status: str) -> TrainChangeInput:
    return TrainChangeInput(
        release_id=TRAIN_ID, step=step, request=train_request(), risk=Risk.MEDIUM, status=status
    )


async def test_train_lifecycle_and_retries(store: CmdbStore) -> None:
    acts, env = CmdbActivities(store), ActivityEnvironment()
    for _ in range(2):  # a retried activity: same keys, same rows
        await env.run(acts.open_train, change("open", "requested"))
        await env.run(acts.update_train, change("phase:launching", "implementing"))
        await env.run(acts.close_train, close_input())
    closed = store.get_change(TRAIN_ID)
    assert closed is not None and closed.close_code == CloseCode.SUCCESSFUL and len(closed.components) == 3
    assert [e.action for e in store.audit(TRAIN_ID)] == ["train.open", "train.update", "train.close"]
    assert store.count("ci_version") == 3


async def test_a_release_change_closed_as_a_train_is_not_retried(store: CmdbStore) -> None:
    store.open_change(open_input())
    acts = CmdbActivities(store)
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            acts.close_train, close_input().model_copy(update={"release_id": "release-checkout-2.4.1"})
        )
    assert caught.value.non_retryable and caught.value.type == "CmdbInvalid"
    assert caught.value.message == "change release-checkout-2.4.1 is a release, not a train"


async def test_train_evidence_is_written_once_and_verifies(store: CmdbStore) -> None:
    cast = TrainCast()
    acts, env = EvidenceActivities(store, cast.worker), ActivityEnvironment()
    inp = train_evidence_input(cast)
    record = await env.run(acts.write_train_evidence, inp)
    assert await env.run(acts.write_train_evidence, inp) == record  # a retry
    # a worker with another key closing it again gets the evidence already written
    other = EvidenceActivities(store, Signer.generate("worker"))
    again = await env.run(other.write_train_evidence, inp.model_copy(update={"step": "evidence-again"}))
    assert again == record
    stored = store.get_evidence(TRAIN_ID)
    assert stored is not None and stored.envelope_sha256 == envelope_digest(stored.envelope)
    assert store.count("evidence") == 1
    report = verify_evidence(stored.envelope, cast.trusts(), [cast.worker.public])
    assert report.ok, report.findings
    assert report.release_id == TRAIN_ID and report.signatures == 7
