"""Deployment windows: the stored change calendar. The rule over windows (recurrence,
zones, DST, the decision) is pure, in calendar.py; this module stores and reads them.

A window applies to a query when its service is the query's or NULL (all) and its
environment is the query's or NULL (all). Two windows *collide* when they have the same
kind, service and environment (NULL equal to NULL) and an occurrence of one overlaps an
occurrence of the other (recurring windows are compared over calendar.HORIZON from the
later first occurrence), or when they have the same name: adding one that collides is
refused, naming the other's id, unless `replace` removes the others (each removal an
audit row). Re-adding an identical window changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, or_, select

from relman.cmdb.audit_log import AuditLogStore
from relman.cmdb.calendar import HORIZON, decide, occurrences
from relman.cmdb.engine import utc
from relman.cmdb.errors import CmdbInvalid, CmdbNotFound
from relman.cmdb.models import DeploymentWindow, metadata
from relman.cmdb.records import WindowSpec
from relman.contracts import WindowDecision, WindowQuery

WINDOW = metadata.tables[DeploymentWindow.__tablename__]
WINDOW_COLUMNS = [
    *(c for c in WINDOW.c if c.name not in ("id", "uid", "start_at", "end_at")),
    WINDOW.c.uid.label("id"),
    WINDOW.c.id.label("row_id"),
    WINDOW.c.start_at.label("start"),
    WINDOW.c.end_at.label("end"),
]
"""The window's row in WindowSpec's names: its stable `uid` as WindowSpec.id, the integer
key as `row_id` (internal)."""


class WindowCollision(CmdbInvalid):
    """A window overlaps another of the same kind, service and environment (or has its name)."""

    type = "WindowCollision"

    def __init__(self, message: str, others: Sequence[WindowSpec]) -> None:
        super().__init__(message)
        self.others = list(others)


@dataclass
class WindowAdded:
    """What `save_window` did."""

    window: WindowSpec
    """The window as stored, with its id."""
    added: bool
    """False: an identical window was already there (or this idempotency key already added it)."""
    replaced: list[WindowSpec] = field(default_factory=list)
    """The colliding windows `replace` removed."""


def _window(r: Any) -> WindowSpec:
    return WindowSpec.model_validate(r, from_attributes=True)


def _same(a: WindowSpec, b: WindowSpec) -> bool:
    """The same window, whatever the ids (and the zone the times are written in)."""
    return a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"})


def overlaps(a: WindowSpec, b: WindowSpec, horizon: timedelta = HORIZON) -> bool:
    """Whether an occurrence of `a` overlaps one of `b` (recurring ones within `horizon`
    of the later first occurrence)."""
    since = max(utc(a.start), utc(b.start))
    if a.rrule is None and b.rrule is None:
        return utc(a.start) < utc(b.end) and utc(b.start) < utc(a.end)
    first = min(utc(a.start), utc(b.start))
    until = since + horizon
    spans_a, spans_b = occurrences(a, first, until), occurrences(b, first, until)
    i = j = 0
    while i < len(spans_a) and j < len(spans_b):  # both sorted by start; sweep
        (sa, ea), (sb, eb) = spans_a[i], spans_b[j]
        if sa < eb and sb < ea:
            return True
        if ea <= eb:
            i += 1
        else:
            j += 1
    return False


def collides(new: WindowSpec, other: WindowSpec) -> bool:
    """Same name, or same kind, service and environment with overlapping occurrences."""
    if new.name == other.name:
        return True
    same_scope = (new.kind, new.service, new.environment) == (other.kind, other.service, other.environment)
    return same_scope and overlaps(new, other)


class WindowStore(AuditLogStore):
    """Blackout, maintenance and freeze windows, and the decision over them."""

    def add_window(
        self, spec: WindowSpec, *, replace: bool = False, idempotency_key: str | None = None
    ) -> bool:
        """Add `spec` (rules in the module docstring); False if nothing changed."""
        return self.save_window(spec, replace=replace, idempotency_key=idempotency_key).added

    def save_window(
        self,
        spec: WindowSpec,
        *,
        replace: bool = False,
        services: Collection[str] | None = None,
        idempotency_key: str | None = None,
    ) -> WindowAdded:
        """Add `spec` under its id (a new uuid hex when None), refusing a collision
        (WindowCollision, naming the other window's id) unless `replace`. With `services`,
        the window's service must be one of them or a CI in the CMDB (CmdbNotFound)."""
        with self._write() as conn:
            if spec.service is not None and services is not None and spec.service not in services:
                from relman.cmdb.cis import CI

                if conn.execute(select(CI.c.id).where(CI.c.name == spec.service)).first() is None:
                    raise CmdbNotFound(
                        f"unknown service {spec.service!r}: not a CI in the CMDB, nor in the catalog"
                    )
            current = [_window(r) for r in conn.execute(select(*WINDOW_COLUMNS))]
            for w in current:
                if _same(w, spec) and spec.id in (None, w.id):
                    return WindowAdded(window=w, added=False)
            if spec.id is not None and any(w.id == spec.id for w in current):
                raise WindowCollision(f"a window with id {spec.id} already exists", [])
            others = [w for w in current if collides(spec, w)]
            if others and not replace:
                raise WindowCollision(_collision(spec, others), others)
            stored = spec.model_copy(update={"id": spec.id or uuid.uuid4().hex})
            key = idempotency_key or f"window.add/{stored.id}/{uuid.uuid4().hex}"
            detail: dict[str, Any] = stored.model_dump(mode="json")
            if others:
                detail["replaces"] = [w.id for w in others]
            if not self._claim(
                conn, key, actor=spec.created_by, action="window.add", subject=spec.name, detail=detail
            ):
                return WindowAdded(window=stored, added=False)
            for w in others:
                self._delete_window(conn, w, actor=spec.created_by, key=f"{key}/replaces/{w.id}", by=stored)
            conn.execute(
                WINDOW.insert().values(
                    uid=stored.id,
                    name=stored.name,
                    kind=stored.kind.value,
                    service=stored.service,
                    environment=stored.environment.value if stored.environment else None,
                    start_at=utc(stored.start),
                    end_at=utc(stored.end),
                    reason=stored.reason,
                    created_by=stored.created_by,
                    rrule=stored.rrule,
                    timezone=stored.timezone,
                )
            )
            return WindowAdded(window=stored, added=True, replaced=others)

    def _delete_window(
        self, conn: Connection, w: WindowSpec, *, actor: str, key: str, by: WindowSpec | None = None
    ) -> bool:
        detail: dict[str, Any] = w.model_dump(mode="json")
        if by is not None:
            detail["replaced_by"] = by.id
        if not self._claim(conn, key, actor=actor, action="window.remove", subject=w.name, detail=detail):
            return False
        conn.execute(WINDOW.delete().where(WINDOW.c.uid == w.id))
        return True

    def get_window(self, window_id: str) -> WindowSpec | None:
        """The window with this id (or, failing that, this name)."""
        with self._read() as conn:
            return self._find(conn, window_id)

    def _find(self, conn: Connection, window_id: str) -> WindowSpec | None:
        for column in (WINDOW.c.uid, WINDOW.c.name):
            row = conn.execute(select(*WINDOW_COLUMNS).where(column == window_id)).first()
            if row is not None:
                return _window(row)
        return None

    def remove_window(self, window_id: str, *, actor: str, idempotency_key: str | None = None) -> bool:
        """Delete the window with this id (or name); False if there was none (or this key
        already removed it)."""
        with self._write() as conn:
            current = self._find(conn, window_id)
            if current is None:
                return False
            key = idempotency_key or f"window.remove/{current.id}/{uuid.uuid4().hex}"
            return self._delete_window(conn, current, actor=actor, key=key)

    def list_windows(self, at: datetime | None = None) -> list[WindowSpec]:
        """All windows by first start, or only those with an occurrence active at `at`."""
        stmt = select(*WINDOW_COLUMNS).order_by(WINDOW.c.start_at, WINDOW.c.name)
        if at is not None:
            at = utc(at)
            stmt = stmt.where(WINDOW.c.start_at <= at, or_(WINDOW.c.rrule.is_not(None), WINDOW.c.end_at > at))
        with self._read() as conn:
            windows = [_window(r) for r in conn.execute(stmt)]
        if at is None:
            return windows
        return [w for w in windows if occurrences(w, at, at + timedelta(microseconds=1))]

    def window_decision(self, q: WindowQuery) -> WindowDecision:
        """Whether deployment is open for `q` (calendar.decide over the applicable windows)."""
        at = utc(q.at)
        stmt = select(*WINDOW_COLUMNS).where(
            or_(WINDOW.c.rrule.is_not(None), WINDOW.c.end_at > at),
            or_(WINDOW.c.service.is_(None), WINDOW.c.service == q.service),
            or_(WINDOW.c.environment.is_(None), WINDOW.c.environment == q.environment.value),
        )
        with self._read() as conn:
            windows = [_window(r) for r in conn.execute(stmt)]
        return decide(windows, at, q.change_type)


def _collision(spec: WindowSpec, others: Sequence[WindowSpec]) -> str:
    first = others[0]
    if first.name == spec.name:
        what = f"a window named {spec.name!r} already exists: {first.id}"
    else:
        env = spec.environment.value if spec.environment else "every environment"
        scope = f"{spec.service or 'every service'}, {env}"
        what = f"overlaps {first.kind.value} window {first.id} ({first.name!r}, {scope})"
    more = f" and {len(others) - 1} more" if len(others) > 1 else ""
    return f"{what}{more}; --replace removes it"
