"""The relman worker for the kill tests: `relman.worker` as is, with shorter activity timeouts.

A worker killed with SIGKILL says nothing to the server: its activities are retried only
when their heartbeat timeout (30 s in the workflow) or start-to-close timeout (45 s for
the short steps without a heartbeat) expires. A workflow interceptor shortens them here
(heartbeat 10 s, 15 s start-to-close for the others) only to keep the test's run time low.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from datetime import timedelta
from typing import Any

from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle

HEARTBEAT = timedelta(seconds=10)
START_TO_CLOSE = timedelta(seconds=15)


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
        heartbeat = input.heartbeat_timeout
        if heartbeat is not None or input.activity == "check_health":
            heartbeat = HEARTBEAT
        start_to_close = input.start_to_close_timeout
        if heartbeat is None and start_to_close is not None:
            start_to_close = min(start_to_close, START_TO_CLOSE)
        return super().start_activity(
            dataclasses.replace(input, heartbeat_timeout=heartbeat, start_to_close_timeout=start_to_close)
        )


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class ShortTimeouts(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _Inbound


async def run() -> None:
    import contextlib
    import signal

    from relman.config import connect, load_settings
    from relman.observability import configure_logging, get_logger
    from relman.worker import build_workers, load_activities

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    activities = load_activities(settings)
    client = await connect()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for w in build_workers(client, settings, activities, interceptors=[ShortTimeouts()]):
            await stack.enter_async_context(w)
        get_logger("tests.faults.worker").info("worker ready", task_queue=settings.task_queue)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
