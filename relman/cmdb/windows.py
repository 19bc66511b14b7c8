"""Deployment windows: stored windows, and the pure rule that decides over them.

A window applies to a query when its service is the query's or NULL (all) and its
environment is the query's or NULL (all); it is active at `at` when
`start <= at < end`. Deployment is closed when an applicable *blackout* is active, or an
applicable *freeze* is active and the change is not an emergency. When closed,
`next_open` is the end of the closing windows, followed through chains and overlaps:
while another closing window is active at that end, move to its end. *Maintenance*
windows are recorded and listed (and named in the decision's reason) but never close
deployment. Otherwise deployment is open.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from relman.cmdb.audit_log import AuditLogStore
from relman.cmdb.engine import utc
from relman.cmdb.models import DeploymentWindow, metadata
from relman.cmdb.records import WindowSpec
from relman.contracts import ChangeType, WindowDecision, WindowKind, WindowQuery

WINDOW = metadata.tables[DeploymentWindow.__tablename__]
WINDOW_COLUMNS = [
    *(c for c in WINDOW.c if c.name not in ("id", "start_at", "end_at")),
    WINDOW.c.id.label("row_id"),
    WINDOW.c.start_at.label("start"),
    WINDOW.c.end_at.label("end"),
]
"""The window's row in WindowSpec's names (its integer key as `row_id`: not WindowSpec.id)."""


def _window(r: Any) -> WindowSpec:
    return WindowSpec.model_validate(r, from_attributes=True)


class WindowStore(AuditLogStore):
    """Blackout, maintenance and freeze windows, and the decision over them."""

    def add_window(self, spec: WindowSpec, *, idempotency_key: str | None = None) -> bool:
        """Create or replace the window named `spec.name`; False if nothing changed."""
        values = dict(
            kind=spec.kind.value,
            service=spec.service,
            environment=spec.environment.value if spec.environment else None,
            start_at=utc(spec.start),
            end_at=utc(spec.end),
            reason=spec.reason,
            created_by=spec.created_by,
        )
        with self._write() as conn:
            current = conn.execute(select(*WINDOW_COLUMNS).where(WINDOW.c.name == spec.name)).first()
            if current is not None and _window(current) == spec.model_copy(
                update={"start": utc(spec.start), "end": utc(spec.end)}
            ):
                return False
            key = idempotency_key or f"window.add/{spec.name}/{uuid.uuid4()}"
            if not self._claim(
                conn,
                key,
                actor=spec.created_by,
                action="window.add",
                subject=spec.name,
                detail=spec.model_dump(mode="json"),
            ):
                return False
            stmt = self._insert(WINDOW).values(name=spec.name, **values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_=values))
            return True

    def remove_window(self, name: str, *, actor: str, idempotency_key: str | None = None) -> bool:
        """Delete the window `name`; False if there was none (or this key already removed it)."""
        with self._write() as conn:
            current = conn.execute(select(*WINDOW_COLUMNS).where(WINDOW.c.name == name)).first()
            if current is None:
                return False
            key = idempotency_key or f"window.remove/{name}/{current.row_id}"
            if not self._claim(
                conn,
                key,
                actor=actor,
                action="window.remove",
                subject=name,
                detail=_window(current).model_dump(mode="json"),
            ):
                return False
            conn.execute(WINDOW.delete().where(WINDOW.c.id == current.row_id))
            return True

    def list_windows(self, at: datetime | None = None) -> list[WindowSpec]:
        """All windows by start, or only those active at `at`."""
        stmt = select(*WINDOW_COLUMNS).order_by(WINDOW.c.start_at, WINDOW.c.name)
        if at is not None:
            at = utc(at)
            stmt = stmt.where(WINDOW.c.start_at <= at, WINDOW.c.end_at > at)
        with self._read() as conn:
            return [_window(r) for r in conn.execute(stmt)]

    def window_decision(self, q: WindowQuery) -> WindowDecision:
        """Whether deployment is open for `q` (rule in the module docstring)."""
        at = utc(q.at)
        stmt = select(*WINDOW_COLUMNS).where(
            WINDOW.c.end_at > at,
            or_(WINDOW.c.service.is_(None), WINDOW.c.service == q.service),
            or_(WINDOW.c.environment.is_(None), WINDOW.c.environment == q.environment.value),
        )
        with self._read() as conn:
            windows = [_window(r) for r in conn.execute(stmt)]
        return decide(windows, at, q.change_type)


def closing_kinds(change_type: ChangeType) -> frozenset[WindowKind]:
    """Window kinds that stop a change of this type."""
    if change_type == ChangeType.EMERGENCY:
        return frozenset({WindowKind.BLACKOUT})
    return frozenset({WindowKind.BLACKOUT, WindowKind.FREEZE})


def decide(windows: Sequence[WindowSpec], at: datetime, change_type: ChangeType) -> WindowDecision:
    """The window rule over windows that already apply to the service and environment."""
    at = utc(at)
    kinds = closing_kinds(change_type)
    closing = [w for w in windows if w.kind in kinds]

    def active(t: datetime) -> list[WindowSpec]:
        return [w for w in closing if utc(w.start) <= t < utc(w.end)]

    now_closing = active(at)
    if not now_closing:
        maintenance = [
            w.name for w in windows if w.kind == WindowKind.MAINTENANCE and utc(w.start) <= at < utc(w.end)
        ]
        reason = f"open; inside maintenance window {', '.join(maintenance)}" if maintenance else "open"
        return WindowDecision(open=True, reason=reason)
    next_open = max(utc(w.end) for w in now_closing)
    # Follow chains: each pass either moves next_open forward or stops; bounded by the count.
    for _ in range(len(closing)):
        later = active(next_open)
        if not later:
            break
        next_open = max(utc(w.end) for w in later)
    first = sorted(now_closing, key=lambda w: (w.kind != WindowKind.BLACKOUT, w.name))[0]
    reason = f"{first.kind.value} {first.name!r} ({first.reason or 'no reason given'}); open again at "
    reason += next_open.isoformat()
    return WindowDecision(
        open=False, window=first.name, kind=first.kind, reason=reason[:1000], next_open=next_open
    )
