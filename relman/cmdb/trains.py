"""Train changes: one change row (kind `train`) per release train, one `change_component`
row per service in it; closing a train writes every component's CI version in the same
transaction.

Conventions of a train's change row: `service` is the train's name, `version` is empty,
`ci_id` is NULL (each component has its own CI) and `commit` is NULL (each component has
its own). Every write is claimed by its idempotency key first, as a release's are: a retry
or a replay writes nothing twice, and a closed train stays closed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from relman.cmdb.changes import CHANGE, CI, CLOSED, COMPONENT, TRAIN, ChangeStore
from relman.cmdb.errors import CmdbInvalid
from relman.contracts import Approval
from relman.contracts.train import ComponentRecord, TrainChangeInput, TrainCloseInput, TrainRequest


class TrainStore(ChangeStore):
    """Opening, moving and closing the change of a release train."""

    def _train_values(self, inp: TrainChangeInput | TrainCloseInput) -> dict[str, Any]:
        req = inp.request
        now = self._clock()
        return dict(
            release_id=inp.release_id,
            kind=TRAIN,
            ci_id=None,
            service=req.train,
            version="",
            change_type=req.change_type.value,
            risk=inp.risk.value,
            requested_by=req.requested_by,
            title=req.title,
            commit=None,
            requested_at=now,
            committed_at=req.committed_at,
            updated_at=now,
            reason="",
        )

    def _component_values(
        self,
        conn: Connection,
        change_id: int,
        position: int,
        c: ComponentRecord,
        *,
        ci_name: str,
        closing: bool,
    ) -> dict[str, Any]:
        running = c.version if closing and c.deployed else None
        ci_id = self._upsert_ci_id(conn, ci_name, current_version=running)
        return dict(
            change_id=change_id,
            position=position,
            service=c.service,
            ci_id=ci_id,
            version=c.version,
            previous_version=c.previous_version,
            commit=c.commit,
            artifact_digest=c.artifact_digest,
            deployed=c.deployed,
            outcome=c.outcome.value if c.outcome else None,
            production_at=c.production_at,
            failed_at=c.failed_at,
            recovered_at=c.recovered_at,
        )

    def open_train(self, inp: TrainChangeInput) -> bool:
        """Record a train's change (status `inp.status`) and a row per component; False if a replay."""
        return self._record_train(inp, action="train.open")

    def update_train(self, inp: TrainChangeInput) -> bool:
        """Set the train's status (and reason from `note`); a closed train stays closed."""
        return self._record_train(inp, action="train.update")

    def _record_train(self, inp: TrainChangeInput, *, action: str) -> bool:
        detail = {
            "status": inp.status,
            "risk": inp.risk.value,
            "note": inp.note,
            "components": {c.service: c.version for c in inp.request.components},
        }
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor=inp.request.requested_by if action == "train.open" else "relman",
                action=action,
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            params = self._train_values(inp) | {"status": inp.status, "reason": inp.note}
            conn.execute(self._sql.change_note if inp.note else self._sql.change_status, params)
            change_id, status = self._train_row(conn, inp.release_id)
            if status != CLOSED:
                records = [_record_of(inp.request, c.service) for c in inp.request.components]
                rows = [
                    self._component_values(
                        conn,
                        change_id,
                        i,
                        ComponentRecord.model_validate(r),
                        ci_name=inp.ci_names.get(r["service"]) or r["service"],
                        closing=False,
                    )
                    for i, r in enumerate(records)
                ]
                conn.execute(
                    self._insert(COMPONENT).on_conflict_do_nothing(index_elements=["change_id", "service"]),
                    rows,
                )
            return True

    def _train_row(self, conn: Connection, release_id: str) -> tuple[int, str]:
        row = conn.execute(
            select(CHANGE.c.id, CHANGE.c.status, CHANGE.c.kind).where(CHANGE.c.release_id == release_id)
        ).one()
        if row.kind != TRAIN:
            raise CmdbInvalid(f"change {release_id} is a {row.kind}, not a train")
        return int(row.id), str(row.status)

    def close_train(self, inp: TrainCloseInput) -> bool:
        """Close the train in one transaction: its status, close code and times, a row per
        component, a CI version per deployed component (with the train's release id), the
        approvals and the audit row. False if this key was already applied."""
        given = {c.service: c for c in inp.components}
        components = [
            # What the close does not say (the commit) is what the request said.
            given[c.service].model_copy(update={"commit": given[c.service].commit or c.commit})
            if c.service in given
            else ComponentRecord.model_validate(_record_of(inp.request, c.service))
            for c in inp.request.components
        ]
        now = self._clock()
        detail = {
            "outcome": inp.outcome.value,
            "close_code": inp.close_code.value,
            "reason": inp.reason,
            "components": {
                c.service: {"version": c.version, "deployed": c.deployed, "outcome": c.outcome}
                for c in components
            },
        }
        with self._write() as conn:
            if not self._claim(
                conn,
                inp.idempotency_key,
                actor="relman",
                action="train.close",
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=detail,
            ):
                return False
            change_id = int(
                conn.execute(
                    self._sql.change_close,
                    self._train_values(inp)
                    | dict(
                        status=CLOSED,
                        outcome=inp.outcome.value,
                        close_code=inp.close_code.value,
                        reason=inp.reason,
                        previous_version=None,
                        artifact_digest=None,
                        production_at=inp.production_at,
                        failed_at=inp.failed_at,
                        recovered_at=inp.recovered_at,
                        closed_at=now,
                    ),
                ).scalar_one()
            )
            self._train_row(conn, inp.release_id)  # refuses closing a release's change as a train
            opened_on = dict(
                conn.execute(
                    select(COMPONENT.c.service, CI.c.name)
                    .join(CI, COMPONENT.c.ci_id == CI.c.id)
                    .where(COMPONENT.c.change_id == change_id)
                ).all()
            )
            rows = [
                self._component_values(
                    conn,
                    change_id,
                    i,
                    c,
                    # The CI named at the open, unless the close names one.
                    ci_name=c.ci_name or opened_on.get(c.service) or c.service,
                    closing=True,
                )
                for i, c in enumerate(components)
            ]
            ex = self._insert(COMPONENT).excluded
            conn.execute(
                self._insert(COMPONENT).on_conflict_do_update(
                    index_elements=["change_id", "service"],
                    set_={k: ex[k] for k in rows[0] if k not in ("change_id", "service")},
                ),
                rows,
            )
            versions = [
                dict(
                    ci_id=row["ci_id"],
                    version=c.version,
                    artifact_digest=c.artifact_digest,
                    commit=c.commit,
                    deployed_at=c.production_at or inp.production_at or now,
                    release_id=inp.release_id,
                )
                for c, row in zip(components, rows, strict=True)
                if c.deployed
            ]
            if versions:
                conn.execute(self._sql.ci_version, versions)
            if inp.approvals:
                conn.execute(self._sql.approval, [_approval(change_id, a) for a in inp.approvals])
            return True


def _record_of(request: TrainRequest, service: str) -> dict[str, Any]:
    """A component as the request names it, nothing done yet."""
    c = next(c for c in request.components if c.service == service)
    return {"service": c.service, "version": c.version, "commit": c.commit}


def _approval(change_id: int, a: Approval) -> dict[str, Any]:
    vote = a.vote
    return dict(
        change_id=change_id,
        gate=vote.gate.value,
        approver=vote.approver,
        on_behalf_of=vote.on_behalf_of,
        decision=vote.decision.value,
        comment=vote.comment,
        approved_hash=vote.approved_hash,
        at=a.at,
    )
