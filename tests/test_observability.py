"""Logs carry release context as JSON; traces and Prometheus metrics switch on from settings."""

from __future__ import annotations

import io
import json
import logging
import urllib.request
from collections.abc import Iterator

import pytest
import structlog
from temporalio.contrib.opentelemetry import TracingInterceptor

from relman.config import load_settings
from relman.devserver import free_port
from relman.observability import (
    ContextInterceptor,
    configure_logging,
    metrics_runtime,
    tracing_interceptors,
    worker_interceptors,
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def test_json_logs_carry_bound_release_context(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    with structlog.contextvars.bound_contextvars(
        release_id="release-greeter-1.1.0", activity="deploy", attempt=2
    ):
        logging.getLogger("relman.activities.environment").info("switched current")
        structlog.get_logger("relman.worker").info("deployed", version="1.1.0")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["switched current", "deployed"]
    for line in lines:
        assert line["release_id"] == "release-greeter-1.1.0"
        assert (line["activity"], line["attempt"], line["level"]) == ("deploy", 2, "info")
    assert lines[1]["version"] == "1.1.0"


def test_tracing_only_when_configured() -> None:
    assert tracing_interceptors(load_settings()) == []
    interceptors = tracing_interceptors(load_settings(trace_console=True))
    assert [type(i) for i in interceptors] == [TracingInterceptor]
    kinds = [type(i) for i in worker_interceptors(load_settings(activity_task_queue="heavy"))]
    assert kinds == [ContextInterceptor]


def test_prometheus_endpoint_from_the_sdk_runtime() -> None:
    assert metrics_runtime(load_settings()) is None
    port = free_port()
    runtime = metrics_runtime(load_settings(metrics_port=port))
    assert runtime is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
