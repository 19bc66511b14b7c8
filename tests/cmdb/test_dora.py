"""DORA metrics: hand-built change rows, expected values computed by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relman.cmdb import ChangeRecord, CmdbStore
from relman.cmdb.dora import compute
from relman.contracts import ChangeType, CloseCode, Outcome
from tests.cmdb.helpers import Clock, close_input, make_store, request_

D = datetime(2025, 3, 1, tzinfo=UTC)  # day 0 of the period
H = timedelta(hours=1)


def row(
    n: int,
    *,
    requested: datetime,
    production: datetime | None = None,
    failed: datetime | None = None,
    recovered: datetime | None = None,
    committed: datetime | None = None,
    code: CloseCode = CloseCode.SUCCESSFUL,
    change_type: ChangeType = ChangeType.NORMAL,
    service: str = "checkout",
) -> ChangeRecord:
    return ChangeRecord(
        release_id=f"r-{n}", service=service, version=f"1.0.{n}", change_type=change_type,
        requested_at=requested, committed_at=committed, production_at=production,
        failed_at=failed, recovered_at=recovered, close_code=code, status="closed",
    )  # fmt: skip


ROWS = [
    # 1: deployed day 0, lead from commit: 10h
    row(1, requested=D, committed=D - 6 * H, production=D + 4 * H),
    # 2: deployed day 0, no commit time: lead from request 2h
    row(2, requested=D + 10 * H, production=D + 12 * H),
    # 3: deployed day 1 then rolled back in production: lead 30h, failed, recovered after 1h
    row(3, requested=D, production=D + 30 * H, failed=D + 31 * H, recovered=D + 32 * H,
        code=CloseCode.ROLLED_BACK),
    # 4: failed during dark launch on day 2 (never 100%), recovered after 3h; an emergency
    row(4, requested=D + 40 * H, failed=D + 50 * H, recovered=D + 53 * H, code=CloseCode.UNSUCCESSFUL,
        change_type=ChangeType.EMERGENCY),
    # 5: emergency deployed day 2: lead 4h
    row(5, requested=D + 44 * H, production=D + 48 * H, change_type=ChangeType.EMERGENCY),
    # 6: rejected by CAB: never attempted
    row(6, requested=D, code=CloseCode.REJECTED),
    # 7: other service, deployed day 1: lead 1h
    row(7, requested=D + 24 * H, production=D + 25 * H, service="search"),
    # 8: outside the period
    row(8, requested=D - 100 * H, production=D - 50 * H),
]  # fmt: skip


def test_metrics_by_hand() -> None:
    m = compute(ROWS, D, D + timedelta(days=3))
    # deployments: 1, 2, 3, 5, 7 = 5 over 3 days
    assert m.deployments == 5
    assert m.deployment_frequency_per_day == pytest.approx(5 / 3)
    # attempts: deployments + 4 (failed in dark launch) = 6; failures: 3 and 4
    assert (m.attempts, m.failures) == (6, 2)
    assert m.change_fail_rate == pytest.approx(2 / 6)
    # lead times 10, 2, 30, 4, 1 -> median 4
    assert m.lead_time_hours == pytest.approx(4)
    # recoveries 1h and 3h -> median 2
    assert m.recovery_hours == pytest.approx(2)
    # emergencies among attempts: 4 and 5
    assert m.rework_rate == pytest.approx(2 / 6)


def test_metrics_for_one_service() -> None:
    m = compute(ROWS, D, D + timedelta(days=3), service="search")
    assert (m.deployments, m.attempts, m.failures) == (1, 1, 0)
    assert m.lead_time_hours == pytest.approx(1) and m.recovery_hours is None
    assert m.change_fail_rate == 0 and m.rework_rate == 0


def test_daily_series() -> None:
    series = compute(ROWS, D, D + timedelta(days=3)).series
    assert [d.day.day for d in series] == [1, 2, 3]
    assert [d.deployments for d in series] == [2, 2, 1]
    assert [d.attempts for d in series] == [2, 2, 2]
    assert [d.failures for d in series] == [0, 1, 1]
    assert [d.emergency for d in series] == [0, 0, 2]
    assert [d.lead_time_hours for d in series] == [pytest.approx(6), pytest.approx(15.5), pytest.approx(4)]
    assert [d.recovery_hours for d in series] == [None, pytest.approx(1), pytest.approx(3)]


def test_empty_period() -> None:
    m = compute([], D, D + timedelta(days=1))
    assert m.deployments == 0 and m.change_fail_rate is None and m.lead_time_hours is None
    with pytest.raises(ValueError):
        compute([], D, D)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock(D)) as s:
        yield s


def test_store_dora_from_closed_changes(store: CmdbStore) -> None:
    store.close_change(
        close_input(version="1.0.0", production_at=D + 5 * H).model_copy(
            update={"request": request_(version="1.0.0", committed_at=D - 3 * H)}
        )
    )
    store.close_change(
        close_input(
            version="1.1.0", outcome=Outcome.ROLLED_BACK, close_code=CloseCode.ROLLED_BACK,
            failed_at=D + 10 * H, recovered_at=D + 10.5 * H,
        )
    )  # fmt: skip
    store.close_change(close_input(version="1.2.0", outcome=Outcome.REJECTED, close_code=CloseCode.REJECTED))
    m = store.dora(D, D + timedelta(days=1))
    assert (m.deployments, m.attempts, m.failures) == (1, 2, 1)
    assert m.lead_time_hours == pytest.approx(8)  # commit D-3h -> production D+5h
    assert m.recovery_hours == pytest.approx(0.5)
    assert m.change_fail_rate == pytest.approx(0.5)
    assert store.dora(D, D + timedelta(days=1), service="search").attempts == 0
