"""A recurring zoned freeze in the real CMDB holds a release across a DST change until the
exact local reopening time, on the time-skipping server, over the March and October changes.

The freeze is "every Friday 18:00 to Monday 06:00 Europe/Paris" (RRULE FREQ=WEEKLY;BYDAY=FR)
in a SQLite CMDB read by the real `CmdbActivities`; every other activity is a fake. The
release starts on the Friday evening before a DST change (2027-03-28 and 2027-10-31 when the
server's clock allows; it only runs forward and is shared by the session, so a later year's
change otherwise), reaches its first exposure step inside the freeze and must start it at
Monday 06:00 local: in March 06:00 CEST, 04:00 UTC (59 real hours after Friday 18:00 CET);
in October 06:00 CET, 05:00 UTC (61 real hours after Friday 18:00 CEST).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from relman.activities.cmdb import CmdbActivities
from relman.cmdb.records import WindowSpec
from relman.cmdb.store import CmdbStore
from relman.contracts import ChangeType, Outcome, WindowKind
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.helpers import new_worker
from tests.workflows.fakes import FakeActivities, make_request
from tests.workflows.test_release import start

pytestmark = pytest.mark.timeout(120)

PARIS = ZoneInfo("Europe/Paris")


def dst_friday(month: int, after: datetime) -> datetime:
    """19:00 Paris on the Friday before the first DST change of `month` (3 or 10) whose Friday
    evening is after `after` (2027-03-26 or 2027-10-29 while the server's clock allows)."""
    for year in range(2027, 2100):
        last_sunday = max(
            datetime(year, month, day, tzinfo=PARIS)
            for day in range(25, 32)
            if datetime(year, month, day).weekday() == 6  # Sunday
        )
        friday = (last_sunday - timedelta(days=2)).replace(hour=19)
        if friday > after:
            return friday
    raise AssertionError(f"no DST change in month {month} after {after}")


@pytest_asyncio.fixture
async def cmdb(tmp_path: Path) -> AsyncIterator[CmdbStore]:
    store = CmdbStore(f"sqlite:///{tmp_path / 'cmdb.sqlite'}")
    yield store
    store.close()


@pytest_asyncio.fixture
async def worker(ts_env: WorkflowEnvironment, cmdb: CmdbStore) -> AsyncIterator[Worker]:
    activities = [*FakeActivities().all(cmdb=False), *CmdbActivities(cmdb).all()]
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as w:
        yield w


@pytest.mark.parametrize(
    ("month", "zone_on_monday", "utc_hour"),
    [(3, "CEST", 4), (10, "CET", 5)],  # the clock only runs forward: March first
    ids=["march", "october"],
)
async def test_weekly_paris_freeze_holds_a_release_until_monday_0600_local_across_dst(
    ts_env: WorkflowEnvironment,
    cmdb: CmdbStore,
    worker: Worker,
    month: int,
    zone_on_monday: str,
    utc_hour: int,
) -> None:
    now = await ts_env.get_current_time()
    friday = dst_friday(month, now + timedelta(minutes=5))
    monday_0600 = (friday + timedelta(days=3)).replace(hour=6)
    assert monday_0600.utcoffset() != friday.utcoffset()  # the change happened on Sunday
    reopening = monday_0600.astimezone(UTC)
    assert (reopening.hour, reopening.minute) == (utc_hour, 0)
    # The freeze was declared a week earlier: this weekend is its second occurrence.
    first = (friday - timedelta(days=7)).replace(hour=18, tzinfo=None)
    cmdb.add_window(
        WindowSpec(
            name="weekend freeze",
            kind=WindowKind.FREEZE,
            service="checkout",
            start=first,
            end=first + timedelta(days=2, hours=12),
            rrule="FREQ=WEEKLY;BYDAY=FR",
            timezone="Europe/Paris",
            reason="no changes over the weekend",
            created_by="erin",
        )
    )

    await ts_env.sleep(friday - now)  # the server's clock to Friday 19:00 Paris
    started = await ts_env.get_current_time()
    assert timedelta(0) <= started - friday < timedelta(minutes=1), (started, friday)
    handle = await start(ts_env, worker, make_request(ChangeType.STANDARD))
    final = await final_status(handle)

    assert final.outcome is Outcome.COMPLETED, final.reason
    [wait] = final.window_waits
    assert (wait.step, wait.window, wait.kind) == ("allow-list", "weekend freeze", WindowKind.FREEZE)
    assert friday <= wait.since < friday + timedelta(hours=3), wait.since  # held on Friday evening
    assert wait.reopens == reopening  # exactly Monday 06:00 local
    assert f"{monday_0600:%Y-%m-%d} 06:00 {zone_on_monday} (0{utc_hour}:00 UTC)" in wait.reason, wait.reason
    assert wait.until is not None and reopening <= wait.until < reopening + timedelta(seconds=5), wait.until
    stage = final.stages[0]
    assert stage.name == "allow-list" and stage.started_at is not None
    assert reopening <= stage.started_at < reopening + timedelta(seconds=5), stage.started_at
    local = stage.started_at.astimezone(PARIS)
    assert (local.weekday(), local.hour, local.minute, local.tzname()) == (0, 6, 0, zone_on_monday)
    held = stage.started_at - wait.since
    print(
        f"\nheld {wait.since.astimezone(PARIS):%a %Y-%m-%d %H:%M:%S %Z} -> stage started "
        f"{local:%a %Y-%m-%d %H:%M:%S.%f %Z} ({stage.started_at:%H:%M:%S.%f} UTC), "
        f"reopens {wait.reopens}, held {held}"
    )
