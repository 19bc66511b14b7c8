"""Change records: the activities' writes (open, update, close with its CI version,
approvals and review) and the reads of changes, DORA's inputs among them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from relman.cmdb import dora as dora_
from relman.cmdb import pg
from relman.cmdb.audit_log import AuditLogStore, claim_params, scrub
from relman.cmdb.engine import utc
from relman.cmdb.errors import CmdbInvalid
from relman.cmdb.models import (
    ApprovalRow,
    Change,
    ChangeComponent,
    CiVersion,
    ConfigurationItem,
    Relationship,
    RelationshipType,
    ReviewRecord,
    metadata,
)
from relman.cmdb.records import (
    ApprovalRecord,
    ChangeDetail,
    ChangeRecord,
    ComponentRow,
    RelationshipRecord,
    ReviewRecordOut,
)
from relman.contracts import ChangeRecordInput, CloseChangeInput, Criticality, Outcome

CI = metadata.tables[ConfigurationItem.__tablename__]
VERSION = metadata.tables[CiVersion.__tablename__]
CHANGE = metadata.tables[Change.__tablename__]
APPROVAL = metadata.tables[ApprovalRow.__tablename__]
REVIEW = metadata.tables[ReviewRecord.__tablename__]
COMPONENT = metadata.tables[ChangeComponent.__tablename__]
REL = metadata.tables[Relationship.__tablename__]
REL_TYPE = metadata.tables[RelationshipType.__tablename__]

DEPLOYED_OUTCOMES = frozenset({Outcome.COMPLETED, Outcome.COMPLETED_WITH_ISSUES})
CLOSED = "closed"
RELEASE = "release"
TRAIN = "train"
"""The kinds of change: one service's release, or a train of several components."""


class ChangeStatements:
    """The write statements, built once: building SQLAlchemy constructs per call cost more
    CPU than the database's own work (measured with bench/cmdb_bench.py)."""

    def __init__(self, dialect: str) -> None:
        def insert(table: Table) -> Any:
            return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)

        def ci(set_: dict[str, Any]) -> Any:
            return insert(CI).on_conflict_do_update(index_elements=["name"], set_=set_).returning(CI.c.id)

        ex_ci = insert(CI).excluded
        bump = {"row_version": CI.c.row_version + 1, "updated_at": ex_ci.updated_at}
        self.ci_set_criticality = ci({"criticality": ex_ci.criticality, **bump})
        self.ci_set_version = ci({"current_version": ex_ci.current_version, **bump})
        # A no-op update rather than DO NOTHING, so RETURNING yields the id of an existing CI.
        self.ci_id = ci({"name": ex_ci.name})

        ex = insert(CHANGE).excluded
        status = {"status": ex.status, "risk": ex.risk, "ci_id": ex.ci_id, "updated_at": ex.updated_at}

        def change(set_: dict[str, Any]) -> Any:
            # A closed change stays closed: later status updates do not reopen it.
            return insert(CHANGE).on_conflict_do_update(
                index_elements=["release_id"], set_=set_, where=CHANGE.c.status != CLOSED
            )

        self.change_status = change(status)
        self.change_note = change({**status, "reason": ex.reason})
        closing = [
            "ci_id", "risk", "status", "outcome", "close_code", "reason", "previous_version",
            "artifact_digest", "production_at", "failed_at", "recovered_at", "closed_at", "updated_at",
        ]  # fmt: skip
        self.change_close = (
            insert(CHANGE)
            .on_conflict_do_update(
                index_elements=["release_id"],
                set_={
                    **{c: ex[c] for c in closing},
                    "committed_at": func.coalesce(ex.committed_at, CHANGE.c.committed_at),
                },
            )
            .returning(CHANGE.c.id)
        )
        ex_v = insert(VERSION).excluded
        self.ci_version = insert(VERSION).on_conflict_do_update(
            index_elements=["ci_id", "version"],
            set_={c: ex_v[c] for c in ("artifact_digest", "commit", "deployed_at", "release_id")},
        )
        self.approval = insert(APPROVAL).on_conflict_do_nothing(
            index_elements=["change_id", "gate", "approver", "approved_hash"]
        )
        ex_r = insert(REVIEW).excluded
        self.review = insert(REVIEW).on_conflict_do_update(
            index_elements=["change_id"],
            set_={"kpis": ex_r.kpis, "feedback": ex_r.feedback, "at": ex_r.at},
        )


def change_select() -> Any:
    """Changes with their CI's name as `ci`, the shape of ChangeRecord."""
    return select(CHANGE, CI.c.name.label("ci")).select_from(CHANGE.outerjoin(CI, CHANGE.c.ci_id == CI.c.id))


class ChangeStore(AuditLogStore):
    """Changes (one per release) and what closing one writes."""

    _sql: ChangeStatements
    fast_path: bool
    """PostgreSQL: close changes with one statement (relman/cmdb/pg.py); tests turn it off."""

    def _upsert_ci_id(
        self,
        conn: Connection,
        name: str,
        *,
        criticality: Criticality | None = None,
        current_version: str | None = None,
    ) -> int:
        """Id of CI `name`, created if absent; sets criticality/current version when given."""
        if criticality is not None:
            stmt = self._sql.ci_set_criticality
        elif current_version is not None:
            stmt = self._sql.ci_set_version
        else:
            stmt = self._sql.ci_id
        params = dict(
            name=name,
            ci_class="service",
            description="",
            criticality=(criticality or Criticality.MEDIUM).value,
            current_version=current_version,
            row_version=1,
            updated_at=self._clock(),
        )
        return int(conn.execute(stmt, params).scalar_one())

    def _change_values(self, inp: ChangeRecordInput | CloseChangeInput, ci_id: int) -> dict[str, Any]:
        req = inp.request
        now = self._clock()
        return dict(
            release_id=inp.release_id,
            ci_id=ci_id,
            service=req.service,
            version=req.version,
            change_type=req.change_type.value,
            risk=inp.risk.value,
            requested_by=req.requested_by,
            title=req.title,
            commit=req.commit,
            requested_at=now,
            committed_at=req.committed_at,
            updated_at=now,
            reason="",
        )

    def open_change(self, inp: ChangeRecordInput) -> bool:
        """Record a release's change (status `inp.status`) and upsert its CI; False if a replay."""
        return self._record_change(inp, action="change.open")

    def update_change(self, inp: ChangeRecordInput) -> bool:
        """Set the change's status (and reason from `note`); a closed change stays closed."""
        return self._record_change(inp, action="change.update")

    def _record_change(self, inp: ChangeRecordInput, *, action: str) -> bool:
        detail = {"status": inp.status, "risk": inp.risk.value, "ci": inp.ci_name, "note": inp.note}
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor=inp.request.requested_by if action == "change.open" else "relman",
                action=action,
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            ci_id = self._upsert_ci_id(conn, inp.ci_name, criticality=inp.criticality)
            params = self._change_values(inp, ci_id) | {"status": inp.status, "reason": inp.note}
            conn.execute(self._sql.change_note if inp.note else self._sql.change_status, params)
            return True

    def close_change(self, inp: CloseChangeInput) -> bool:
        """Close the change in one transaction: status, close code, times, CI version, approvals,
        review record and audit row. False if this key was already applied."""
        deployed = inp.deployed_version is not None and inp.outcome in DEPLOYED_OUTCOMES
        ci_name = inp.ci_name or inp.request.service
        if len(ci_name) > 200:
            raise CmdbInvalid(f"CI name longer than 200 characters: {ci_name[:40]}...")
        now = self._clock()
        detail = {
            "outcome": inp.outcome.value,
            "close_code": inp.close_code.value,
            "reason": inp.reason,
            "deployed_version": inp.deployed_version if deployed else None,
            "previous_version": inp.previous_version,
        }
        if self.dialect == "postgresql" and self.fast_path:
            audit = claim_params(
                inp.idempotency_key,
                at=now,
                actor="relman",
                action="change.close",
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=scrub(detail),
            )
            params = pg.close_params(inp, now=now, ci_name=ci_name, deployed=deployed, audit=audit)
            with self._write(autocommit=True) as conn:
                return bool(conn.execute(pg.CLOSE_CHANGE, params).scalar_one())
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor="relman",
                action="change.close",
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            ci_id = self._upsert_ci_id(
                conn, ci_name, current_version=inp.deployed_version if deployed else None
            )
            change_id = conn.execute(
                self._sql.change_close,
                self._change_values(inp, ci_id)
                | dict(
                    status=CLOSED,
                    outcome=inp.outcome.value,
                    close_code=inp.close_code.value,
                    reason=inp.reason,
                    previous_version=inp.previous_version,
                    artifact_digest=inp.artifact_digest,
                    production_at=inp.production_at,
                    failed_at=inp.failed_at,
                    recovered_at=inp.recovered_at,
                    closed_at=now,
                ),
            ).scalar_one()
            if deployed:
                conn.execute(
                    self._sql.ci_version,
                    dict(
                        ci_id=ci_id,
                        version=inp.deployed_version,
                        artifact_digest=inp.artifact_digest,
                        commit=inp.request.commit,
                        deployed_at=inp.production_at or now,
                        release_id=inp.release_id,
                    ),
                )
            if inp.approvals:
                conn.execute(
                    self._sql.approval,
                    [
                        dict(
                            change_id=change_id,
                            gate=a.vote.gate.value,
                            approver=a.vote.approver,
                            on_behalf_of=a.vote.on_behalf_of,
                            decision=a.vote.decision.value,
                            comment=a.vote.comment,
                            approved_hash=a.vote.approved_hash,
                            at=a.at,
                        )
                        for a in inp.approvals
                    ],
                )
            conn.execute(
                self._sql.review,
                dict(
                    change_id=change_id,
                    kpis=dict(inp.kpis),
                    feedback=[f.model_dump(mode="json") for f in inp.feedback],
                    at=now,
                ),
            )
            return True

    def list_changes(self, since: datetime | None = None, service: str | None = None) -> list[ChangeRecord]:
        """Changes requested at or after `since` (all when None), oldest first; with `service`,
        its releases and the trains it is a component of."""
        stmt = change_select()
        if since is not None:
            stmt = stmt.where(CHANGE.c.requested_at >= utc(since))
        if service is not None:
            stmt = stmt.where(
                or_(
                    and_(CHANGE.c.kind == RELEASE, CHANGE.c.service == service),
                    CHANGE.c.id.in_(select(COMPONENT.c.change_id).where(COMPONENT.c.service == service)),
                )
            )
        with self._read() as conn:
            rows = conn.execute(stmt.order_by(CHANGE.c.requested_at, CHANGE.c.id)).all()
        return [ChangeRecord.model_validate(r, from_attributes=True) for r in rows]

    def get_change(self, release_id: str) -> ChangeDetail | None:
        """One change with its approvals and review record."""
        with self._read() as conn:
            r = conn.execute(change_select().where(CHANGE.c.release_id == release_id)).first()
            if r is None:
                return None
            approvals = conn.execute(
                select(APPROVAL).where(APPROVAL.c.change_id == r.id).order_by(APPROVAL.c.at, APPROVAL.c.id)
            ).all()
            review = conn.execute(select(REVIEW).where(REVIEW.c.change_id == r.id)).first()
            components = conn.execute(
                select(COMPONENT, CI.c.name.label("ci"))
                .select_from(COMPONENT.outerjoin(CI, COMPONENT.c.ci_id == CI.c.id))
                .where(COMPONENT.c.change_id == r.id)
                .order_by(COMPONENT.c.position)
            ).all()
            cis = sorted({c.ci for c in components if c.ci is not None})
            relationships = self._relationships_between(conn, cis) if len(cis) > 1 else []
        return ChangeDetail.model_validate(
            {k: r._mapping[k] for k in ChangeRecord.model_fields}
            | {
                "approvals": [ApprovalRecord.model_validate(a, from_attributes=True) for a in approvals],
                "review": (
                    None if review is None else ReviewRecordOut.model_validate(review, from_attributes=True)
                ),
                "components": [ComponentRow.model_validate(c, from_attributes=True) for c in components],
                "relationships": relationships,
            }
        )

    def _relationships_between(self, conn: Connection, cis: list[str]) -> list[RelationshipRecord]:
        """The relationships whose parent and child are both among `cis`."""
        parent, child = CI.alias("p"), CI.alias("c")
        stmt = (
            select(
                parent.c.name.label("parent"),
                child.c.name.label("child"),
                REL_TYPE.c.name.label("type"),
                REL_TYPE.c.forward_label.label("label"),
            )
            .select_from(
                REL.join(parent, REL.c.parent_id == parent.c.id)
                .join(child, REL.c.child_id == child.c.id)
                .join(REL_TYPE, REL.c.type_id == REL_TYPE.c.id)
            )
            .where(parent.c.name.in_(cis), child.c.name.in_(cis))
            .order_by(parent.c.name, REL_TYPE.c.name, child.c.name)
        )
        return [RelationshipRecord.model_validate(r, from_attributes=True) for r in conn.execute(stmt)]

    def count(self, table: str) -> int:
        """Rows in one table (tests and benchmarks)."""
        if table not in metadata.tables:
            raise CmdbInvalid(f"unknown table {table!r}")
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())

    # --- DORA ------------------------------------------------------------------------

    def dora_rows(self, since: datetime, until: datetime, service: str | None = None) -> list[ChangeRecord]:
        """Changes deployed or failed in production within [since, until): releases as they are,
        and each train as one change per component that reached production
        (`dora.component_deployment`)."""
        since, until = utc(since), utc(until)

        def within(table: Table) -> Any:
            return or_(
                and_(table.c.production_at >= since, table.c.production_at < until),
                and_(table.c.failed_at >= since, table.c.failed_at < until),
            )

        releases = change_select().where(CHANGE.c.kind == RELEASE, within(CHANGE))
        components = (
            select(COMPONENT, CI.c.name.label("ci"))
            .select_from(COMPONENT.outerjoin(CI, COMPONENT.c.ci_id == CI.c.id))
            .where(within(COMPONENT))
        )
        if service is not None:
            releases = releases.where(CHANGE.c.service == service)
            components = components.where(COMPONENT.c.service == service)
        with self._read() as conn:
            rows = [ChangeRecord.model_validate(r, from_attributes=True) for r in conn.execute(releases)]
            parts = conn.execute(components.order_by(COMPONENT.c.change_id, COMPONENT.c.position)).all()
            trains = {
                r.id: ChangeRecord.model_validate(r, from_attributes=True)
                for r in conn.execute(
                    change_select().where(CHANGE.c.id.in_(sorted({p.change_id for p in parts})))
                )
            }
        return rows + [
            dora_.component_deployment(
                trains[p.change_id], ComponentRow.model_validate(p, from_attributes=True)
            )
            for p in parts
        ]

    def dora(self, since: datetime, until: datetime, service: str | None = None) -> dora_.DoraMetrics:
        """The five DORA metrics and a daily series over [since, until)."""
        return dora_.compute(self.dora_rows(since, until, service), since, until, service)
