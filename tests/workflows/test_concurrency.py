"""Two releases of one service at once: the second waits for the first's go-live, never interleaved.

The rule (ReleaseWorkflow._take_lease, a CMDB lease per service): a release holds its service's
deployment path from its staging deploy until its production go-live is verified (or until it
rolls back, or ends). Staging feeds production, so a second release of the same service does not
deploy anywhere meanwhile: it waits in the testing phase, durably and visibly, with `awaiting`
and the `ReleaseAwaiting` search attribute set to `release:<holder id>`; it re-checks the lease
with a growing backoff (15 s doubling to 5 min) and expires after the catalog's `window_wait`.
Once the holder is live, the second deploys to staging, tests, launches and goes live itself.

Here greeter 1.1.0 and 1.1.1 start together, with the real activities (builds, tests, environment
directories, flags, health probes) and a SQLite CMDB on the time-skipping server. Both are
standard changes (the example's `docs-only` change model), so nothing but the lease holds
them. Which one gets the lease first is a race; the test finds out and checks the other waits
for it. The environment adapter's own records
(`<env>/.relman/deploys.json`, one per deploy with its time) show the order of every switch.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from relman import visibility
from relman.activities.registry import create_activities
from relman.cmdb.store import CmdbStore
from relman.contracts import ChangeType, CloseCode, Environment, Outcome, Phase, ReleaseStatus
from relman.results import final_status
from relman.workflows.release import ReleaseWorkflow
from tests.activities.greeter_support import example_keys
from tests.helpers import new_worker
from tests.workflows.test_release import start, status
from tests.workflows.test_release_real import CATALOG, manifest

pytestmark = pytest.mark.timeout(120)


def deploy_records(data: Path) -> list[tuple[str, str, str]]:
    """(release id, environment, version) of every deploy the adapter recorded, in time order."""
    records: list[tuple[float, str, str, str]] = []
    for environment in Environment:
        state = data / "envs" / "greeter" / environment.value / ".relman" / "deploys.json"
        for record in json.loads(state.read_text()).values() if state.exists() else []:
            records.append((record["at"], record["release_id"], environment.value, record["version"]))
    return [r[1:] for r in sorted(records)]


async def test_second_release_of_a_service_waits_for_the_first_to_go_live(
    ts_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    cmdb_url = f"sqlite:///{tmp_path / 'cmdb.sqlite'}"
    store = CmdbStore(cmdb_url)
    example_keys(data)
    activities = create_activities(CATALOG, data, cmdb_url)
    # Either may win the lease, so the second may be a lower version: allowed here on purpose.
    standard = {"change_type": ChangeType.STANDARD, "change_model": "docs-only", "allow_downgrade": True}
    requests = [
        manifest(name).model_copy(update=standard) for name in ("greeter-1.1.0", "greeter-1.1.1-emergency")
    ]
    async with new_worker(ts_env.client, ReleaseWorkflow, activities=activities) as worker:
        handles = await asyncio.gather(*(start(ts_env, worker, r) for r in requests))

        # Real time (nothing awaits a result, so the server does not skip): poll until one waits.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        waiting: dict[str, ReleaseStatus] = {}
        seen: dict[str, ReleaseStatus] = {}
        while not waiting:
            assert loop.time() < deadline, "no release ever waited for the other: " + "; ".join(
                f"{s.phase} awaiting {s.awaiting} {s.issues}" for s in seen.values()
            )
            for h in handles:
                s = seen[h.id] = await status(h)
                assert s.outcome is None, f"{h.id} ended early: {s.outcome} {s.reason}"
                if any(a.startswith("release:") for a in s.awaiting):
                    waiting[h.id] = s
            await asyncio.sleep(0.1)
        assert len(waiting) == 1
        second: WorkflowHandle[Any, Any] = next(h for h in handles if h.id in waiting)
        first = next(h for h in handles if h is not second)
        waiter = waiting[second.id]
        assert waiter.awaiting == [f"release:{first.id}"]
        assert waiter.phase is Phase.TESTING
        desc = await second.describe()
        assert desc.typed_search_attributes.get(visibility.RELEASE_AWAITING) == [f"release:{first.id}"]
        # While it waits, the second has deployed nowhere.
        assert all(rid == first.id for rid, _, _ in deploy_records(data))

        # One result at a time: awaiting both with gather() stopped time skipping here (105 s, not 10 s).
        first_final = await final_status(first)
        second_final = await final_status(second)

    assert first_final.outcome is Outcome.COMPLETED, first_final.reason
    assert second_final.outcome is Outcome.COMPLETED, second_final.reason
    v1, v2 = first_final.request.version, second_final.request.version
    # Never interleaved: the first goes live everywhere before the second deploys anywhere.
    assert deploy_records(data) == [
        (first.id, "staging", v1),
        (first.id, "production", v1),
        (second.id, "staging", v2),
        (second.id, "production", v2),
    ]
    first_live = next(t.at for t in first_final.history if t.phase is Phase.REVIEWING)
    second_testing = [t.at for t in second_final.history if t.phase is Phase.TESTING]
    assert second_testing and second_testing[0] < first_live  # it was waiting, in testing, meanwhile
    prod = data / "envs" / "greeter" / "production" / "current"
    assert prod.readlink().name == v2
    for h in (first, second):
        change = store.get_change(h.id)
        assert change is not None and change.close_code is CloseCode.SUCCESSFUL
    assert store.count("environment_lease") == 0
    store.close()
