"""A release train in the CMDB: one change with a row per component, closed in one transaction
with a CI version per deployed component; retries write nothing twice. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from relman.cmdb import CiSpec, CmdbInvalid, CmdbStore
from relman.cmdb.conflicts import find_conflicts
from relman.contracts import ChangeType, CloseCode, ConflictMode, Environment, Outcome, Risk, WindowQuery
from relman.contracts.train import ComponentRecord, TrainChangeInput, TrainCloseInput
from tests.cmdb.helpers import Clock, make_store, open_input, vote
from tests.cmdb.helpers import close_input as release_close
from tests.cmdb.train_support import SERVICES, T0, TRAIN_ID, VERSIONS, close_input, train_request


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock(T0)) as s:
        yield s


def open_train(step: str = "open", status: str = "requested", **kw: object) -> TrainChangeInput:
    fields: dict[str, object] = dict(
        release_id=TRAIN_ID, step=step, request=train_request(), risk=Risk.MEDIUM, status=status
    )
    fields.update(kw)
    return TrainChangeInput.model_validate(fields)


def test_open_records_one_change_and_a_row_per_component(store: CmdbStore) -> None:
    assert store.open_train(open_train(ci_names={"api": "checkout-api"}))
    assert not store.open_train(open_train())  # a retry: the same key, nothing written
    assert store.count("change") == 1 and store.count("change_component") == 3
    change = store.get_change(TRAIN_ID)
    assert change is not None
    assert (change.kind, change.service, change.status, change.ci) == (
        "train",
        "checkout-2026-12",
        "requested",
        None,
    )
    assert [(c.service, c.ci, c.version, c.commit, c.deployed) for c in change.components] == [
        ("db-migration", "db-migration", "3.0.0", "aaaaaaa", False),
        ("api", "checkout-api", "2.1.0", "bbbbbbb", False),
        ("worker", "worker", "1.4.0", "ccccccc", False),
    ]
    assert [e.action for e in store.audit(TRAIN_ID)] == ["train.open"]
    # the catalog's CIs are not touched beyond existing: each component's CI is there
    assert {c.name for c in store.list_cis()} == {"db-migration", "checkout-api", "worker"}


def test_close_writes_everything_once(store: CmdbStore) -> None:
    store.open_train(open_train(ci_names={"api": "checkout-api"}))
    store.update_train(open_train(step="approved", status="approved", note="CAB: go"))
    inp = close_input(approvals=[vote("alice"), vote("bob")])
    assert store.close_train(inp)
    assert not store.close_train(inp)  # retried
    change = store.get_change(TRAIN_ID)
    assert change is not None
    assert (change.status, change.outcome, change.close_code) == ("closed", "completed", CloseCode.SUCCESSFUL)
    assert change.production_at == T0 + timedelta(hours=3)
    assert [a.approver for a in change.approvals] == ["alice", "bob"]
    # the CI named when the train opened stays the component's CI at the close
    assert [(c.service, c.ci, c.deployed, c.outcome, c.previous_version) for c in change.components] == [
        ("db-migration", "db-migration", True, "completed", "0.9.0"),
        ("api", "checkout-api", True, "completed", "0.9.0"),
        ("worker", "worker", True, "completed", "0.9.0"),
    ]
    for service, ci in (("db-migration", "db-migration"), ("api", "checkout-api"), ("worker", "worker")):
        versions = store.ci_versions(ci)
        assert [(v.version, v.release_id, v.commit) for v in versions] == [
            (VERSIONS[service], TRAIN_ID, change.components[SERVICES.index(service)].commit)
        ]
        got = store.get_ci(ci)
        assert got is not None and got.current_version == VERSIONS[service]
    assert store.count("ci_version") == 3 and store.count("change_component") == 3
    # Another key closing it again (a replayed workflow) rewrites the same rows, adds none.
    assert store.close_train(close_input(step="close-again"))
    assert (
        store.count("ci_version") == 3
        and store.count("change_component") == 3
        and store.count("approval") == 2
    )
    assert [e.action for e in store.audit(TRAIN_ID)] == [
        "train.open",
        "train.update",
        "train.close",
        "train.close",
    ]
    # a closed train stays closed
    store.update_train(open_train(step="late", status="implementing"))
    again = store.get_change(TRAIN_ID)
    assert again is not None and again.status == "closed"


def test_a_rolled_back_train_versions_nothing_it_took_back(store: CmdbStore) -> None:
    store.open_train(open_train())
    failed = T0 + timedelta(hours=4)
    components = [
        ComponentRecord(
            service="db-migration", version="3.0.0", deployed=False, outcome=Outcome.ROLLED_BACK,
            production_at=T0 + timedelta(hours=1), failed_at=failed,
        ),
        ComponentRecord(
            service="api", version="2.1.0", deployed=False, outcome=Outcome.ROLLED_BACK,
            production_at=T0 + timedelta(hours=2), failed_at=failed,
        ),
        # worker failed in its canary (10 % of users): a failure, never live
        ComponentRecord(service="worker", version="1.4.0", outcome=Outcome.ROLLED_BACK, failed_at=failed),
    ]  # fmt: skip
    assert store.close_train(
        close_input(
            outcome=Outcome.ROLLED_BACK,
            close_code=CloseCode.ROLLED_BACK,
            components=components,
            production_at=None,
            failed_at=failed,
            recovered_at=failed + timedelta(minutes=30),
            reason="worker canary failed",
        )
    )
    change = store.get_change(TRAIN_ID)
    assert (
        change is not None
        and change.close_code == CloseCode.ROLLED_BACK
        and change.reason == "worker canary failed"
    )
    assert [c.deployed for c in change.components] == [False, False, False]
    assert store.count("ci_version") == 0
    assert all(ci.current_version is None for ci in store.list_cis())


def test_components_not_reported_are_recorded_as_never_deployed(store: CmdbStore) -> None:
    # Rejected at the request gate: nothing built; the close names no component.
    assert store.close_train(
        close_input(
            outcome=Outcome.REJECTED, close_code=CloseCode.REJECTED, components=[], production_at=None
        )
    )
    change = store.get_change(TRAIN_ID)
    assert change is not None and change.kind == "train"
    assert [(c.service, c.version, c.commit, c.deployed) for c in change.components] == [
        ("db-migration", "3.0.0", "aaaaaaa", False),
        ("api", "2.1.0", "bbbbbbb", False),
        ("worker", "1.4.0", "ccccccc", False),
    ]


def test_relationships_between_components_as_the_cmdb_has_them(store: CmdbStore) -> None:
    store.open_train(open_train())
    store.upsert_ci(CiSpec(name="payments-db"))
    store.add_relationship("api", "db-migration", "depends_on")
    store.add_relationship("worker", "api", "depends_on")
    store.add_relationship("api", "payments-db", "depends_on")  # outside the train: not shown
    change = store.get_change(TRAIN_ID)
    assert change is not None
    assert [(r.parent, r.type, r.child) for r in change.relationships] == [
        ("api", "depends_on", "db-migration"),
        ("worker", "depends_on", "api"),
    ]
    release = store.get_change("nope")
    assert release is None


def test_list_changes_shows_trains_beside_releases(store: CmdbStore) -> None:
    store.close_change(release_close(service="api", version="2.0.9"))
    store.open_train(open_train())
    store.close_change(release_close(service="search", version="1.0.0"))
    every = store.list_changes()
    assert [(c.kind, c.service) for c in every] == [
        ("release", "api"),
        ("train", "checkout-2026-12"),
        ("release", "search"),
    ]
    assert [c.release_id for c in store.list_changes(service="api")] == ["release-api-2.0.9", TRAIN_ID]
    assert [c.release_id for c in store.list_changes(service="worker")] == [TRAIN_ID]
    assert [c.release_id for c in store.list_changes(service="search")] == ["release-search-1.0.0"]


def test_a_release_change_is_not_closed_as_a_train(store: CmdbStore) -> None:
    store.open_change(open_input(service="checkout"))
    inp = close_input().model_copy(update={"release_id": "release-checkout-2.4.1"})
    with pytest.raises(CmdbInvalid, match="is a release, not a train"):
        store.close_train(inp)
    with pytest.raises(CmdbInvalid, match="is a release, not a train"):  # nothing was claimed
        store.close_train(inp)
    with pytest.raises(CmdbInvalid, match="is a release, not a train"):
        store.open_train(
            open_train(step="train-open").model_copy(update={"release_id": "release-checkout-2.4.1"})
        )
    release = store.get_change("release-checkout-2.4.1")
    assert release is not None and release.status == "requested" and release.kind == "release"
    assert store.count("change_component") == 0 and store.count("ci_version") == 0


def test_bad_train_input_is_refused_in_one_line() -> None:
    cases = [
        ({"components": [ComponentRecord(service="billing", version="1.0.0")]}, "billing is not in train"),
        (
            {"components": [ComponentRecord(service="api", version="2.0.0")]},
            "api is at version 2.0.0, the train asks for 2.1.0",
        ),
        (
            {"components": [ComponentRecord(service="api", version="2.1.0")] * 2},
            "component api is recorded twice",
        ),
    ]
    for update, message in cases:
        with pytest.raises(ValidationError) as caught:
            close_input(components=update["components"])
        assert message in str(caught.value)
    with pytest.raises(ValidationError, match="billing not in train"):
        open_train(ci_names={"billing": "billing"})
    with pytest.raises(ValidationError):
        open_train(ci_names={"api": "checkout\napi"})  # a newline in a CI name
    with pytest.raises(ValidationError):
        open_train(status="Approved; DROP")


def test_two_trains_sharing_a_service_keep_their_own_rows(store: CmdbStore) -> None:
    store.close_train(close_input())
    other = train_request().model_copy(update={"train": "checkout-2027-01"})
    second = TrainCloseInput(
        release_id="train-checkout-2027-01",
        step="close",
        request=other,
        risk=Risk.LOW,
        outcome=Outcome.COMPLETED,
        close_code=CloseCode.SUCCESSFUL,
        components=[ComponentRecord(service="api", version="2.1.0", deployed=True, production_at=T0)],
    )
    assert store.close_train(second)
    assert store.count("change") == 2 and store.count("change_component") == 6
    # api 2.1.0 is one CI version; its row names the train that deployed it last
    assert [v.release_id for v in store.ci_versions("api")] == ["train-checkout-2027-01"]


def conflicts_of(store: CmdbStore, service: str, release_id: str) -> list[tuple[str, str, str | None]]:
    q = WindowQuery(
        service=service,
        environment=Environment.PRODUCTION,
        at=T0,
        change_type=ChangeType.NORMAL,
        release_id=release_id,
        ci_name=service,
        conflicts=ConflictMode.WARN,
    )
    return [(c.ci, c.via, c.release_id) for c in find_conflicts(store, q).items]


def test_an_open_train_is_open_on_each_components_ci(store: CmdbStore) -> None:
    store.open_train(open_train())
    store.upsert_ci(CiSpec(name="frontend"))
    store.add_relationship("frontend", "api", "depends_on")
    # a release of the API itself, and one of a CI depending on the train's API
    assert conflicts_of(store, "api", "release-api-2.2.0") == [("api", "", TRAIN_ID)]
    assert conflicts_of(store, "frontend", "release-frontend-1.0.0") == [("api", "depends_on api", TRAIN_ID)]
    # the train's own components (and the train) are no conflict of themselves
    for own in (TRAIN_ID, f"{TRAIN_ID}.api", f"{TRAIN_ID}.api.launch"):
        assert conflicts_of(store, "api", own) == []
    # another train whose name starts like this one's is
    assert conflicts_of(store, "api", "train-checkout-2026-12-bis.api") == [("api", "", TRAIN_ID)]
    store.close_train(close_input())
    assert conflicts_of(store, "api", "release-api-2.2.0") == []
