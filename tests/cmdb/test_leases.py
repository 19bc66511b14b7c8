"""Environment leases: one release at a time per service, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relman.cmdb import CmdbStore
from relman.contracts import Environment, LeaseInput
from tests.cmdb.helpers import Clock, make_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock()) as s:
        yield s


def lease(release_id: str, service: str = "checkout") -> LeaseInput:
    return LeaseInput(
        release_id=release_id, step="lease", service=service, environment=Environment.PRODUCTION
    )


def test_one_holder_at_a_time(store: CmdbStore) -> None:
    assert store.acquire_lease(lease("release-a")).granted
    assert store.acquire_lease(lease("release-a")).granted  # a retry by the holder
    refused = store.acquire_lease(lease("release-b"))
    assert not refused.granted and refused.holder == "release-a"
    assert store.acquire_lease(lease("release-b", service="payments")).granted
    assert not store.release_lease(lease("release-b"))  # only the holder gives it back
    assert store.release_lease(lease("release-a"))
    assert not store.release_lease(lease("release-a"))  # twice is harmless
    assert store.acquire_lease(lease("release-b")).granted


def test_concurrent_claims_grant_exactly_one(store: CmdbStore) -> None:
    with ThreadPoolExecutor(8) as pool:
        decisions = list(pool.map(lambda i: store.acquire_lease(lease(f"release-{i}")), range(8)))
    granted = [d for d in decisions if d.granted]
    assert len(granted) == 1
    assert {d.holder for d in decisions} == {granted[0].holder}
