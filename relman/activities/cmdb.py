"""CMDB activities: open, update and close change records (a release's, a train's); ask
for deployment windows.

The store is synchronous (SQLAlchemy), so each call runs in a thread. A database that
does not answer raises a retryable error (Temporal retries with its policy); data the
CMDB refuses raises a non-retryable `ApplicationError` whose type names the reason.
Every write is idempotent by the input's key (`release_id/step`), so retries are safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.cmdb.conflicts import apply_conflicts, find_conflicts
from relman.cmdb.errors import CmdbError, CmdbInvalid
from relman.cmdb.store import CmdbStore
from relman.contracts import (
    Activity,
    ChangeRecordInput,
    CloseChangeInput,
    ConflictMode,
    EventInput,
    LeaseDecision,
    LeaseInput,
    WindowDecision,
    WindowQuery,
)
from relman.contracts.train import TrainChangeInput, TrainCloseInput

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def store_call(fn: Callable[[], T]) -> T:
    """Run a (synchronous) store call in a thread; what the CMDB refuses is non-retryable."""
    try:
        return await asyncio.to_thread(fn)
    except CmdbInvalid as e:
        raise ApplicationError(str(e), type=e.type, non_retryable=True) from e
    except CmdbError as e:
        # Unavailable, busy, lost optimistic lock: a later attempt can succeed.
        raise ApplicationError(str(e), type=e.type, non_retryable=False) from e


class CmdbActivities:
    """Activities over one `CmdbStore`; the worker registers the bound methods."""

    def __init__(self, store: CmdbStore) -> None:
        self.store = store

    def all(self) -> list[Callable[..., Any]]:
        """Every CMDB activity, bound to this store, for a worker to register."""
        return [
            self.open_change,
            self.update_change,
            self.close_change,
            self.check_window,
            self.acquire_lease,
            self.release_lease,
            self.record_event,
            self.open_train,
            self.update_train,
            self.close_train,
        ]

    async def _call(self, fn: Callable[[], T]) -> T:
        return await store_call(fn)

    @activity.defn(name=Activity.OPEN_CHANGE)
    async def open_change(self, inp: ChangeRecordInput) -> None:
        """Record the release's change in the CMDB (and its CI)."""
        applied = await self._call(lambda: self.store.open_change(inp))
        log.info("cmdb.change_opened", key=inp.idempotency_key, applied=applied)

    @activity.defn(name=Activity.UPDATE_CHANGE)
    async def update_change(self, inp: ChangeRecordInput) -> None:
        """Move the change to `inp.status`, with `inp.note` as its reason."""
        applied = await self._call(lambda: self.store.update_change(inp))
        log.info("cmdb.change_updated", key=inp.idempotency_key, status=inp.status, applied=applied)

    @activity.defn(name=Activity.RECORD_EVENT)
    async def record_event(self, inp: EventInput) -> None:
        """An audit row for what a person did to a running release (an amendment, an override)."""
        applied = await self._call(
            lambda: self.store.append_audit(
                inp.idempotency_key,
                actor=inp.actor,
                action=inp.action,
                subject=inp.release_id,
                release_id=inp.release_id,
                detail=inp.detail,
            )
        )
        log.info("cmdb.event_recorded", key=inp.idempotency_key, action=inp.action, applied=applied)

    @activity.defn(name=Activity.CLOSE_CHANGE)
    async def close_change(self, inp: CloseChangeInput) -> None:
        """Close the change with its close code, CI version, approvals and review, at once."""
        applied = await self._call(lambda: self.store.close_change(inp))
        log.info(
            "cmdb.change_closed", key=inp.idempotency_key, close_code=inp.close_code.value, applied=applied
        )

    @activity.defn(name=Activity.OPEN_TRAIN)
    async def open_train(self, inp: TrainChangeInput) -> None:
        """Record a train's one change in the CMDB, with a row per component (and its CI)."""
        applied = await self._call(lambda: self.store.open_train(inp))
        log.info("cmdb.train_opened", key=inp.idempotency_key, applied=applied)

    @activity.defn(name=Activity.UPDATE_TRAIN)
    async def update_train(self, inp: TrainChangeInput) -> None:
        """Move the train's change to `inp.status`, with `inp.note` as its reason."""
        applied = await self._call(lambda: self.store.update_train(inp))
        log.info("cmdb.train_updated", key=inp.idempotency_key, status=inp.status, applied=applied)

    @activity.defn(name=Activity.CLOSE_TRAIN)
    async def close_train(self, inp: TrainCloseInput) -> None:
        """Close the train's change: close code, components, CI versions and approvals, at once."""
        applied = await self._call(lambda: self.store.close_train(inp))
        log.info(
            "cmdb.train_closed", key=inp.idempotency_key, close_code=inp.close_code.value, applied=applied
        )

    @activity.defn(name=Activity.CHECK_WINDOW)
    async def check_window(self, q: WindowQuery) -> WindowDecision:
        """Whether deployment is open now for this service, environment and change type, with
        the conflicts on related CIs (relman/cmdb/conflicts.py) under `q.conflicts`."""
        return await self._call(lambda: self._window_decision(q))

    def _window_decision(self, q: WindowQuery) -> WindowDecision:
        decision = self.store.window_decision(q)
        if q.conflicts == ConflictMode.OFF:
            return decision
        found = find_conflicts(self.store, q)
        if found.items:
            log.info(
                "cmdb.conflicts",
                release_id=q.release_id,
                ci=q.ci_name or q.service,
                mode=q.conflicts.value,
                found=len(found.items) + found.truncated,
            )
        return apply_conflicts(decision, found.items, q.conflicts, at=q.at, windows_end=found.windows_end)

    @activity.defn(name=Activity.ACQUIRE_LEASE)
    async def acquire_lease(self, inp: LeaseInput) -> LeaseDecision:
        """Claim the service's environment for this release, or say who holds it."""
        return await self._call(lambda: self.store.acquire_lease(inp))

    @activity.defn(name=Activity.RELEASE_LEASE)
    async def release_lease(self, inp: LeaseInput) -> None:
        """Give the service's environment back (idempotent)."""
        released = await self._call(lambda: self.store.release_lease(inp))
        log.info("cmdb.lease_released", key=inp.idempotency_key, released=released)
