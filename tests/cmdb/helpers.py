"""Builders shared by the CMDB tests: stores on SQLite and PostgreSQL, typical inputs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from relman.cmdb import CmdbStore
from relman.contracts import (
    Approval,
    ChangeRecordInput,
    ChangeType,
    CloseChangeInput,
    CloseCode,
    Criticality,
    Decision,
    Feedback,
    Gate,
    Outcome,
    ReleaseRequest,
    Risk,
    Vote,
)

BACKENDS = ["sqlite", "postgresql", "postgresql-portable"]
"""`postgresql-portable` runs the portable close path on PostgreSQL (no one-statement fast path)."""

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


class Clock:
    """A settable clock, so stored times are known to the test."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> datetime:
        self.at += timedelta(**kw)
        return self.at


@contextmanager
def make_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock
) -> Iterator[CmdbStore]:
    """A fresh, isolated store: a temp SQLite file, or a unique PostgreSQL schema."""
    if backend == "sqlite":
        store = CmdbStore(f"sqlite:///{tmp_path}/cmdb.db", clock=clock)
    else:
        pg_url = request.getfixturevalue("pg_url")  # skips, saying why, without a server
        store = CmdbStore(pg_url, schema=f"t_{uuid.uuid4().hex[:16]}", clock=clock)
        store.fast_path = backend == "postgresql"
    try:
        yield store
    finally:
        if backend != "sqlite":
            store.drop()
        store.close()


def request_(
    service: str = "checkout",
    version: str = "2.4.1",
    change_type: ChangeType = ChangeType.NORMAL,
    committed_at: datetime | None = None,
) -> ReleaseRequest:
    return ReleaseRequest(
        service=service,
        version=version,
        change_type=change_type,
        requested_by="alice",
        title=f"{service} {version}",
        commit="abc1234",
        committed_at=committed_at,
    )


def rid(service: str = "checkout", version: str = "2.4.1") -> str:
    return f"release-{service}-{version}"


def open_input(
    service: str = "checkout",
    version: str = "2.4.1",
    step: str = "open",
    status: str = "requested",
    note: str = "",
) -> ChangeRecordInput:
    return ChangeRecordInput(
        release_id=rid(service, version),
        step=step,
        request=request_(service, version),
        risk=Risk.MEDIUM,
        ci_name=service,
        criticality=Criticality.HIGH,
        status=status,
        note=note,
    )


def vote(approver: str, gate: Gate = Gate.REQUEST) -> Approval:
    return Approval(
        vote=Vote(gate=gate, approver=approver, decision=Decision.APPROVE, approved_hash="a" * 64),
        at=T0 + timedelta(hours=1),
    )


def close_input(
    service: str = "checkout",
    version: str = "2.4.1",
    step: str = "close",
    outcome: Outcome = Outcome.COMPLETED,
    close_code: CloseCode = CloseCode.SUCCESSFUL,
    **kw: object,
) -> CloseChangeInput:
    deployed = outcome in (Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES)
    fields: dict[str, object] = dict(
        release_id=rid(service, version),
        step=step,
        request=request_(service, version),
        risk=Risk.MEDIUM,
        outcome=outcome,
        close_code=close_code,
        ci_name=service,
        deployed_version=version,
        previous_version="2.4.0",
        artifact_digest="d" * 64,
        approvals=[vote("bob"), vote("carol")],
        kpis={"error_rate": 0.002},
        feedback=[Feedback(by="dave", rating=4, comment="fine")],
        production_at=T0 + timedelta(hours=5) if deployed else None,
    )
    fields.update(kw)
    return CloseChangeInput.model_validate(fields)


@contextmanager
def empty_database(request: pytest.FixtureRequest, tmp_path: Path, kind: str, prefix: str) -> Iterator[str]:
    """The URL of an empty database of its own: a SQLite file, or a new PostgreSQL database
    (dropped afterwards) on the machine's server."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/cmdb.db"
        return
    pg_url = request.getfixturevalue("pg_url")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
