"""`relman.recorded`: a status rebuilt from records says what they hold and nothing more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relman.cmdb.records import ApprovalRecord, AuditEntry, ChangeDetail
from relman.contracts import ChangeType, Outcome, Phase, ReleaseRequest, Risk, StatusSource
from relman.errors import RelmanError
from relman.recorded import CmdbRecord, ServerRecord, read_cmdb, rebuild, request_from_change

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
REQUEST = ReleaseRequest(
    service="greeter", version="1.1.0", requested_by="pat", title="Greeter 1.1.0", commit="1a2b3c4d5e6f"
)


def change(**fields: object) -> ChangeDetail:
    base: dict[str, object] = dict(
        release_id="r-1",
        service="greeter",
        version="1.1.0",
        change_type=ChangeType.NORMAL,
        risk="medium",
        requested_by="pat",
        title="Greeter 1.1.0",
        commit="1a2b3c4d5e6f",
        requested_at=T0,
    )
    return ChangeDetail.model_validate(base | fields)


def audit(action: str, at: datetime, **detail: object) -> AuditEntry:
    return AuditEntry(
        at=at,
        actor="relman",
        action=action,
        subject="r-1",
        release_id="r-1",
        detail=detail,
        idempotency_key=action,
    )


def test_a_running_release_at_a_gate() -> None:
    server = ServerRecord(
        release_id="r-1",
        execution="RUNNING",
        started_at=T0,
        phase="awaiting_cab",
        awaiting=["alice", "bob"],
        risk="medium",
        request=REQUEST,
    )
    cmdb = CmdbRecord(
        change=change(), audit=[audit("change.open", T0 + timedelta(seconds=1), status="requested")]
    )
    st = rebuild(server, cmdb, "no worker polls task queue q")
    assert st.source is StatusSource.RECORDS
    assert (st.phase, st.awaiting, st.outcome, st.risk) == (
        Phase.AWAITING_CAB,
        ["alice", "bob"],
        None,
        Risk.MEDIUM,
    )
    assert st.request == REQUEST and st.reason == ""
    assert st.issues == ["status rebuilt from records: no worker polls task queue q"]
    assert [h.note for h in st.history] == ["workflow started", "CMDB: change requested"]
    assert st.gates == {} and st.plan is None and st.stages == []


def test_cancel_requested_but_not_run_is_not_shown_as_running() -> None:
    server = ServerRecord(
        release_id="r-1", execution="RUNNING", cancel_requested=True, phase="awaiting_cab", awaiting=["alice"]
    )
    st = rebuild(server, CmdbRecord(change=change()), "no worker answered within 5s")
    assert st.outcome is None and st.awaiting == []
    assert st.reason.startswith("cancelled (temporal workflow cancel)") and "no outcome recorded" in st.reason
    assert st.request == request_from_change(change())  # no memo, no start input: the CMDB's


def test_terminated_before_relman_closed_it() -> None:
    server = ServerRecord(
        release_id="r-1",
        execution="TERMINATED",
        started_at=T0,
        closed_at=T0 + timedelta(minutes=5),
        phase="awaiting_plan_approval",
        awaiting=["carol"],
        close_reason="operator gave up",
        request=REQUEST,
    )
    st = rebuild(server, CmdbRecord(change=change(status="authorized")), "no worker polls task queue q")
    assert (st.phase, st.outcome, st.awaiting) == (Phase.CLOSED, None, [])
    assert st.reason == (
        "the workflow was terminated (operator gave up) before relman closed the release: no outcome "
        "recorded; the CMDB change is still authorized"
    )
    assert st.history[-1].note == "workflow terminated"


def test_a_closed_release_keeps_the_outcome_and_the_cmdb_close() -> None:
    closed = change(
        status="closed",
        outcome="aborted",
        close_code="aborted",
        reason="workflow cancelled",
        closed_at=T0 + timedelta(minutes=2),
        approvals=[
            ApprovalRecord(
                gate="request",
                approver="alice",
                on_behalf_of=None,
                decision="approve",
                comment="fine",
                approved_hash="a" * 64,
                at=T0 + timedelta(minutes=1),
            )
        ],
    )
    rows = [audit("change.close", T0 + timedelta(minutes=2), outcome="aborted", close_code="aborted")]
    server = ServerRecord(
        release_id="r-1",
        execution="CANCELED",
        closed_at=T0 + timedelta(minutes=2),
        outcome="",
        request=REQUEST,
    )
    st = rebuild(server, CmdbRecord(change=closed, audit=rows), "no worker answered within 5s")
    assert (st.phase, st.outcome, st.reason) == (Phase.CLOSED, Outcome.ABORTED, "workflow cancelled")
    assert [h.note for h in st.history] == [
        "request gate approved by alice: fine",
        "CMDB: change closed, aborted (aborted)",
    ]
    # The workflow's own close says needs-operator with `awaiting = ["operator"]`.
    flagged = rebuild(
        ServerRecord(release_id="r-1", execution="FAILED", outcome="rolled_back", awaiting=["operator"]),
        CmdbRecord(change=closed),
        "x",
    )
    assert flagged.needs_operator and flagged.outcome is Outcome.ROLLED_BACK


def test_no_record_of_the_request_is_an_error() -> None:
    with pytest.raises(RelmanError, match="no record holds its request"):
        rebuild(ServerRecord(release_id="r-1", execution="RUNNING"), CmdbRecord(), "x")


def test_reading_never_creates_a_cmdb(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite"
    assert read_cmdb(f"sqlite:///{missing}", "r-1").problem == f"no CMDB at {missing}"
    assert not missing.exists()
    assert read_cmdb(None, "r-1").problem == "no CMDB configured"


def test_the_timeline_follows_the_published_phases() -> None:
    server = ServerRecord(
        release_id="r-1",
        execution="RUNNING",
        started_at=T0,
        phases=[
            (T0, "requested"),
            (T0 + timedelta(seconds=2), "awaiting_cab"),
            (T0 + timedelta(seconds=9), "awaiting_plan_approval"),
            (T0 + timedelta(seconds=9), "awaiting_plan_approval"),
            (T0 + timedelta(seconds=20), "building"),
        ],
        cancel_requested_at=T0 + timedelta(seconds=30),
        phase="building",
        request=REQUEST,
    )
    rows = [
        audit("change.open", T0 + timedelta(seconds=1), status="requested"),
        audit("change.update", T0 + timedelta(seconds=21), status="authorized"),
    ]
    st = rebuild(server, CmdbRecord(change=change(), audit=rows), "x")
    assert [(h.phase, h.note) for h in st.history] == [
        (Phase.REQUESTED, "workflow started"),
        (Phase.REQUESTED, "CMDB: change requested"),
        (Phase.AWAITING_CAB, ""),
        (Phase.AWAITING_PLAN_APPROVAL, ""),
        (Phase.BUILDING, ""),
        (Phase.BUILDING, "CMDB: change authorized"),
        (Phase.BUILDING, "cancel requested (temporal workflow cancel)"),
    ]
    assert st.reason.startswith("cancelled (temporal workflow cancel) at 2026-03-01 12:00:30Z, but")
