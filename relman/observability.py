"""Logs, traces and metrics for the worker: structlog JSON, OpenTelemetry, Prometheus.

Every log line of a release carries `release_id`, `phase`, `activity` and `attempt`:
workflow logs get them from the SDK's `workflow.logger` extras (the phase from the
`ReleasePhase` search attribute), activity logs from contextvars bound by
`ContextInterceptor`, which also carries the phase to activities in a header.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog
import temporalio.activity
import temporalio.workflow
from temporalio.api.common.v1 import Payload
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from relman.config import Settings
from relman.contracts import Activity
from relman.visibility import RELEASE_PHASE

PHASE_HEADER = "relman-phase"
HEAVY_ACTIVITIES = frozenset({Activity.BUILD_PACKAGE.value, Activity.RUN_TESTS.value})
"""Activities routed to RELMAN_ACTIVITY_TASK_QUEUE when one is configured."""


# --- logging -----------------------------------------------------------------


def _temporal_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Lift the SDK's `temporal_workflow` / `temporal_activity` extras into flat fields."""
    record: logging.LogRecord | None = event.get("_record")
    if record is None:
        return event
    wf = getattr(record, "temporal_workflow", None)
    if isinstance(wf, Mapping):
        event.setdefault("release_id", wf.get("workflow_id"))
        event.setdefault("workflow_type", wf.get("workflow_type"))
        info = getattr(record, "workflow_info", None)
        phase = info.typed_search_attributes.get(RELEASE_PHASE) if info is not None else None
        if phase:
            event.setdefault("phase", phase)
    act = getattr(record, "temporal_activity", None)
    if isinstance(act, Mapping):
        event.setdefault("release_id", act.get("workflow_id"))
        event.setdefault("activity", act.get("activity_type"))
        event.setdefault("attempt", act.get("attempt"))
    return event


def configure_logging(level: str = "INFO", fmt: str = "json", stream: Any = None) -> None:
    """Route stdlib and structlog logs through one renderer (JSON lines or console)."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _temporal_fields],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # The fields above replace the SDK's "(workflow_id=...)" message suffix.
    temporalio.workflow.logger.workflow_info_on_message = False
    temporalio.workflow.logger.full_workflow_info_on_extra = True
    temporalio.activity.logger.activity_info_on_message = False


def get_logger(name: str = "relman") -> Any:
    return structlog.get_logger(name)


# --- interceptors -----------------------------------------------------------


class _ActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = temporalio.activity.info()
        fields: dict[str, Any] = {
            "release_id": info.workflow_id,
            "activity": info.activity_type,
            "attempt": info.attempt,
        }
        header = input.headers.get(PHASE_HEADER)
        if header is not None:
            fields["phase"] = header.data.decode()
        step = getattr(input.args[0], "step", None) if input.args else None
        if step:
            fields["step"] = step
        # Each activity runs in its own task (or a copied context), so the binding is private.
        with structlog.contextvars.bound_contextvars(**fields):
            return await super().execute_activity(input)


def _workflow_outbound(activity_queue: str | None) -> type[WorkflowOutboundInterceptor]:
    class _Outbound(WorkflowOutboundInterceptor):
        def start_activity(self, input: StartActivityInput) -> temporalio.workflow.ActivityHandle[Any]:
            phase = temporalio.workflow.info().typed_search_attributes.get(RELEASE_PHASE)
            if phase:
                input.headers = {
                    **input.headers,
                    PHASE_HEADER: Payload(metadata={"encoding": b"binary/plain"}, data=phase.encode()),
                }
            # Routing by name keeps the workflow unaware of the deployment's queue layout.
            if activity_queue and input.activity in HEAVY_ACTIVITIES and input.task_queue is None:
                input.task_queue = activity_queue
            return super().start_activity(input)

    return _Outbound


class ContextInterceptor(Interceptor):
    """Binds release id, phase, activity and attempt to activity logs; routes heavy activities."""

    def __init__(self, activity_task_queue: str | None = None) -> None:
        self._outbound = _workflow_outbound(activity_task_queue)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContext(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        outbound = self._outbound

        class _Inbound(WorkflowInboundInterceptor):
            def init(self, outbound_next: WorkflowOutboundInterceptor) -> None:
                super().init(outbound(outbound_next))

        return _Inbound


# --- traces and metrics ----------------------------------------------------


def tracing_interceptors(settings: Settings, service_name: str = "relman-worker") -> list[Interceptor]:
    """The SDK's TracingInterceptor with an OTLP or console exporter, when configured."""
    if not (settings.otlp_endpoint or settings.trace_console):
        return []
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    from temporalio.contrib.opentelemetry import TracingInterceptor

    exporter: SpanExporter
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    else:
        exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return [TracingInterceptor()]


def shutdown_tracing() -> None:
    """Flush spans still buffered in the batch processor."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def metrics_runtime(settings: Settings) -> Runtime | None:
    """An SDK runtime exporting Prometheus metrics on RELMAN_METRICS_PORT, when set."""
    if settings.metrics_port is None:
        return None
    bind = f"{settings.metrics_host}:{settings.metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))


def worker_interceptors(settings: Settings) -> Iterable[Interceptor]:
    """All worker interceptors: context (logs, routing) and tracing."""
    return [ContextInterceptor(settings.activity_task_queue), *tracing_interceptors(settings)]
