"""Conflict detection over the CMDB's relationships (ServiceNow-like), and its pure rule.

For a release of CI X (the window query's `ci_name`, else its service's name), the
conflicts are:

- every other *open* release (a change not closed, not the asking release) whose CI is X,
  or a CI related to X by one relationship in either direction (`X depends_on Y` or
  `Y depends_on X`, `runs_on`, ...); `via` names that relationship. An open release train
  is open on each of its components' CIs; it is not a conflict of its own components
  (whose release ids extend the train's: `<train id>.<service>...`);
- every closing window (blackout, and freeze unless the change is an emergency: the
  window rule's kinds) active at the query's time on the *service* of a related CI, in
  the query's environment. A CI's services are the CI's own name and the services of the
  changes recorded on it. Global windows and the release's own service's windows are
  already in the plain window decision, so only related services' own windows count.

`apply_conflicts` combines them with the window decision per the service's mode: `off`
changes nothing and lists nothing; `warn` lists them; `block` also closes deployment
while any is found. No Temporal here: the CHECK_WINDOW activity calls `find_conflicts`
and `apply_conflicts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, select, union_all

from relman.cmdb.calendar import decide
from relman.cmdb.changes import CHANGE, CLOSED, COMPONENT, TRAIN
from relman.cmdb.cis import CI
from relman.cmdb.engine import utc
from relman.contracts import Conflict, ConflictMode, WindowDecision, WindowQuery

if TYPE_CHECKING:
    from relman.cmdb.store import CmdbStore

MAX_CONFLICTS = 20
"""At most this many conflicts are listed (releases first, then windows)."""
RECHECK = timedelta(minutes=5)
"""A release blocked by another open release asks again this much later."""


@dataclass(frozen=True)
class Conflicts:
    """What `find_conflicts` found: the conflicts, and when the conflicting windows end."""

    items: list[Conflict] = field(default_factory=list)
    windows_end: datetime | None = None
    """The latest reopening of the conflicting windows' chains (None: none, or one unknown)."""
    truncated: int = 0
    """How many more were found than listed."""


def _related(store: CmdbStore, ci: str) -> dict[str, str]:
    """CIs one relationship hop from `ci`, each with how it relates (`via`)."""
    related: dict[str, str] = {}
    for rel in store.relationships(ci):
        if rel.parent == ci and rel.child != ci:
            related.setdefault(rel.child, f"{rel.type} {rel.child}")
        elif rel.child == ci and rel.parent != ci:
            related.setdefault(rel.parent, f"{rel.parent} {rel.type} {ci}")
    return related


def _conflict(ci: str, via: str, **kw: object) -> Conflict:
    """A Conflict; `via` only when the CI is a related one (the contract's one-line fields)."""
    fields: dict[str, object] = {"ci": ci, **kw}
    if via:
        fields["via"] = via[:200]
    return Conflict.model_validate(fields)


def _trains_of(release_id: str) -> list[str]:
    """The ids a train asking, or one of its components, may have: `train-x.api.launch` is
    train `train-x`'s component (and asks for `train-x`, `train-x.api` and itself)."""
    parts = release_id.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def find_conflicts(store: CmdbStore, q: WindowQuery) -> Conflicts:
    """The conflicts of the release asking `q` (the rule in the module docstring)."""
    at = utc(q.at)
    ci = q.ci_name or q.service
    related = _related(store, ci)
    via = {ci: "", **related}
    releases_on = (
        select(
            CHANGE.c.release_id,
            CHANGE.c.service,
            CHANGE.c.version,
            CHANGE.c.status,
            CI.c.name.label("ci"),
            CHANGE.c.requested_at,
            CHANGE.c.id,
        )
        .select_from(CHANGE.join(CI, CHANGE.c.ci_id == CI.c.id))
        .where(CI.c.name.in_(list(via)), CHANGE.c.status != CLOSED)
    )
    trains_on = (
        select(
            CHANGE.c.release_id,
            COMPONENT.c.service,
            COMPONENT.c.version,
            CHANGE.c.status,
            CI.c.name.label("ci"),
            CHANGE.c.requested_at,
            CHANGE.c.id,
        )
        .select_from(
            COMPONENT.join(CHANGE, and_(COMPONENT.c.change_id == CHANGE.c.id, CHANGE.c.kind == TRAIN)).join(
                CI, COMPONENT.c.ci_id == CI.c.id
            )
        )
        .where(CI.c.name.in_(list(via)), CHANGE.c.status != CLOSED)
    )
    if q.release_id is not None:
        releases_on = releases_on.where(CHANGE.c.release_id != q.release_id)
        trains_on = trains_on.where(CHANGE.c.release_id.not_in(_trains_of(q.release_id)))
    open_on = union_all(releases_on, trains_on).subquery()
    stmt = select(open_on).order_by(open_on.c.requested_at, open_on.c.id, open_on.c.ci)
    services_stmt = (
        select(CI.c.name, CHANGE.c.service)
        .select_from(CHANGE.join(CI, CHANGE.c.ci_id == CI.c.id))
        .where(CI.c.name.in_(list(related)))
        .distinct()
    )
    with store._read() as conn:
        releases = conn.execute(stmt.limit(MAX_CONFLICTS + 1)).all()
        service_rows = conn.execute(services_stmt).all() if related else []

    items = [
        _conflict(
            r.ci,
            via[r.ci],
            release_id=r.release_id,
            detail=(
                f"release {r.release_id} ({r.service} {r.version}, {r.status}) is open on {r.ci}"
                + (f" ({via[r.ci]})" if via[r.ci] else "")
            )[:1000],
        )
        for r in releases
    ]

    # The services of each related CI: its own name, and those of the changes made to it.
    services: dict[str, str] = {}
    for name in related:
        services.setdefault(name, name)
    for row in service_rows:
        services.setdefault(row.service, row.name)
    services.pop(q.service, None)  # the release's own service: in the plain decision already
    windows_end: datetime | None = None
    unknown_end = False
    if services:
        windows = [
            w
            for w in store.list_windows()
            if w.service in services and (w.environment is None or w.environment == q.environment)
        ]
        for service in sorted(services):
            decision = decide([w for w in windows if w.service == service], at, q.change_type)
            if decision.open:
                continue
            name = services[service]
            items.append(
                _conflict(
                    name,
                    via[name],
                    window=decision.window,
                    detail=f"{service}: {decision.reason}"[:1000],
                )
            )
            if decision.next_open is None:
                unknown_end = True
            else:
                windows_end = max(windows_end or decision.next_open, decision.next_open)
    return Conflicts(
        items=items[:MAX_CONFLICTS],
        windows_end=None if unknown_end else windows_end,
        truncated=max(0, len(items) - MAX_CONFLICTS),
    )


def apply_conflicts(
    decision: WindowDecision,
    conflicts: list[Conflict],
    mode: ConflictMode,
    *,
    at: datetime,
    windows_end: datetime | None = None,
) -> WindowDecision:
    """The window decision with the conflicts under `mode` (at most MAX_CONFLICTS listed).

    `off`: unchanged, nothing listed. `warn`: listed, open or closed as before. `block`:
    listed and, when any, closed: `conflict:<release or window>`, a one-line reason naming
    it and how it relates, `next_open` in RECHECK (an open release may close any time), or
    at `windows_end` when only windows conflict and they end later (unknown: RECHECK). A decision closed by a
    window already stays that window's, with the conflicts listed.
    """
    if mode == ConflictMode.OFF:
        return decision.model_copy(update={"conflicts": []})
    listed = list(conflicts[:MAX_CONFLICTS])
    if mode == ConflictMode.WARN or not listed or not decision.open:
        return decision.model_copy(update={"conflicts": listed})
    first = listed[0]
    what = f"release {first.release_id}" if first.release_id else f"window {first.window!r}"
    where = f"{first.ci} ({first.via})" if first.via else first.ci
    more = f" and {len(listed) - 1} more" if len(listed) > 1 else ""
    next_open = utc(at) + RECHECK
    if windows_end is not None and all(c.release_id is None for c in listed):
        next_open = max(next_open, utc(windows_end))  # only windows: nothing changes before they end
    reason = f"conflict: {what} on {where}{more}; checked again at {next_open.isoformat()}"
    return WindowDecision(
        open=False,
        window=f"conflict:{first.release_id or first.window}",
        kind=None,
        reason=" ".join(reason.split())[:1000],
        next_open=next_open,
        conflicts=listed,
    )
