"""The worker's interceptor: heavy activities go to their own queue and carry the release phase."""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

from relman.contracts import Activity
from relman.observability import ContextInterceptor
from relman.visibility import RELEASE_PHASE
from tests.helpers import new_worker


@activity.defn(name=Activity.BUILD_PACKAGE.value)
async def fake_build() -> dict[str, str]:
    bound = structlog.contextvars.get_contextvars()
    return {"queue": activity.info().task_queue, "phase": bound.get("phase", ""), "rid": bound["release_id"]}


@activity.defn(name=Activity.NOTIFY.value)
async def fake_notify() -> dict[str, str]:
    return {"queue": activity.info().task_queue}


@workflow.defn(sandboxed=False)
class RoutingProbe:
    @workflow.run
    async def run(self) -> list[dict[str, str]]:
        workflow.upsert_search_attributes([RELEASE_PHASE.value_set("building")])
        out = []
        for name in (Activity.BUILD_PACKAGE.value, Activity.NOTIFY.value):
            out.append(await workflow.execute_activity(name, start_to_close_timeout=timedelta(seconds=10)))
        return out


async def test_heavy_activities_routed_with_phase(ts_env: WorkflowEnvironment) -> None:
    heavy = f"heavy-{uuid.uuid4()}"
    interceptor = ContextInterceptor(activity_task_queue=heavy)
    async with (
        new_worker(ts_env.client, RoutingProbe, activities=[fake_notify], interceptors=[interceptor]) as main,
        new_worker(ts_env.client, activities=[fake_build], task_queue=heavy, interceptors=[interceptor]),
    ):
        rid = f"release-probe-{uuid.uuid4().hex[:6]}"
        result = await ts_env.client.execute_workflow(RoutingProbe.run, id=rid, task_queue=main.task_queue)
    assert result == [{"queue": heavy, "phase": "building", "rid": rid}, {"queue": main.task_queue}]
