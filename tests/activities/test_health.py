"""Health: the pure verdict, a real HTTP endpoint, a metrics file, the example's probe command."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from relman.activities.health import HealthActivities, HealthThresholds, judge_health
from relman.contracts import AcceptanceCriteria, Environment, HealthInput, Verdict

from .greeter_support import build, custom_catalog, deploy, example_catalog

T = HealthThresholds(max_error_rate=0.05, max_latency_ms=200, min_samples=20, margin=0.2)


@pytest.mark.parametrize(
    ("error_rate", "latency", "samples", "verdict"),
    [
        (0.0, 50, 100, Verdict.PASS),
        (0.039, 159, 100, Verdict.PASS),
        (0.045, 50, 100, Verdict.MARGINAL),  # within 20% below the threshold
        (0.055, 50, 100, Verdict.MARGINAL),  # slightly over
        (0.0, 230, 100, Verdict.MARGINAL),
        (0.07, 50, 100, Verdict.FAIL),
        (0.0, 900, 100, Verdict.FAIL),
        (0.3, 50, 100, Verdict.FAIL),
        (0.0, 50, 19, Verdict.NO_DATA),  # too few samples is never a pass
        (None, 50, 100, Verdict.NO_DATA),
        (0.0, None, 100, Verdict.NO_DATA),
    ],
)
def test_judge_health(
    error_rate: float | None, latency: float | None, samples: int, verdict: Verdict
) -> None:
    assert judge_health(error_rate, latency, samples, T) == verdict


def test_zero_error_budget() -> None:
    strict = HealthThresholds(max_error_rate=0.0, max_latency_ms=100, min_samples=1)
    assert judge_health(0.0, 10, 5, strict) == Verdict.PASS
    assert judge_health(0.001, 10, 5, strict) == Verdict.FAIL


def health_input(version: str = "1.1.0", env: Environment = Environment.PRODUCTION) -> HealthInput:
    return HealthInput(
        release_id=f"release-greeter-{version}",
        step="health:one-percent",
        service="greeter",
        environment=env,
        version=version,
        acceptance=AcceptanceCriteria(max_error_rate=0.05, max_latency_ms=250),
    )


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, dict[str, Any]]]:
    body: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", body
    server.shutdown()


async def test_http_endpoint(tmp_path: Path, metrics_server: tuple[str, dict[str, Any]]) -> None:
    url, body = metrics_server
    catalog = custom_catalog(tmp_path, health={"http": url, "min_samples": 10})
    acts = HealthActivities(catalog)
    body.update(error_rate=0.001, latency_p95_ms=40, requests=500)
    report = await ActivityEnvironment().run(acts.check_health, health_input())
    assert report.verdict == Verdict.PASS and report.samples == 500 and report.latency_ms == 40
    body.update(error_rate=0.2)
    report = await ActivityEnvironment().run(acts.check_health, health_input())
    assert report.verdict == Verdict.FAIL
    body.update(requests=3)
    assert (await ActivityEnvironment().run(acts.check_health, health_input())).verdict == Verdict.NO_DATA


async def test_unreachable_endpoint_is_no_data(tmp_path: Path) -> None:
    catalog = custom_catalog(tmp_path, health={"http": "http://127.0.0.1:9/metrics", "timeout": 2})
    report = await ActivityEnvironment().run(HealthActivities(catalog).check_health, health_input())
    assert report.verdict == Verdict.NO_DATA and "unreachable" in report.detail


async def test_metrics_file(tmp_path: Path) -> None:
    catalog = custom_catalog(tmp_path, health={"file": "{env_dir}/metrics-{version}.json", "min_samples": 5})
    report = await ActivityEnvironment().run(HealthActivities(catalog).check_health, health_input())
    assert report.verdict == Verdict.NO_DATA  # no file yet
    env_dir = catalog.service("greeter").env_dir(Environment.PRODUCTION)
    env_dir.mkdir(parents=True)
    (env_dir / "metrics-1.1.0.json").write_text(
        json.dumps({"error_rate": 0.045, "latency_ms": 10, "samples": 50})
    )
    report = await ActivityEnvironment().run(HealthActivities(catalog).check_health, health_input())
    assert report.verdict == Verdict.MARGINAL


async def test_a_stale_metrics_file_is_no_data(tmp_path: Path) -> None:
    health = {"file": "{env_dir}/metrics.json", "min_samples": 5, "max_age": 60}
    catalog = custom_catalog(tmp_path, health=health)
    env_dir = catalog.service("greeter").env_dir(Environment.PRODUCTION)
    env_dir.mkdir(parents=True)
    metrics = env_dir / "metrics.json"
    metrics.write_text(json.dumps({"error_rate": 0.0, "latency_ms": 10, "samples": 50}))
    acts = HealthActivities(catalog)
    assert (await ActivityEnvironment().run(acts.check_health, health_input())).verdict == Verdict.PASS
    written = time.time() - 3600  # the exporter stopped an hour ago
    os.utime(metrics, (written, written))
    report = await ActivityEnvironment().run(acts.check_health, health_input())
    assert report.verdict == Verdict.NO_DATA and "stale" in report.detail and "max 60s" in report.detail


async def test_metrics_of_another_version_are_no_data(
    tmp_path: Path, metrics_server: tuple[str, dict[str, Any]]
) -> None:
    url, body = metrics_server
    acts = HealthActivities(custom_catalog(tmp_path, health={"http": url, "min_samples": 10}))
    body.update(version="1.0.0", error_rate=0.0, latency_p95_ms=40, requests=500)
    report = await ActivityEnvironment().run(acts.check_health, health_input("1.1.0"))
    assert report.verdict == Verdict.NO_DATA and "from version '1.0.0', not 1.1.0" in report.detail
    body.update(version="1.1.0")
    assert (await ActivityEnvironment().run(acts.check_health, health_input("1.1.0"))).verdict == Verdict.PASS


async def test_example_probe_measures_the_real_service(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    acts = HealthActivities(catalog)
    # Not deployed anywhere yet: no data, never a pass.
    assert (
        await ActivityEnvironment().run(acts.check_health, health_input("1.1.0"))
    ).verdict == Verdict.NO_DATA
    for version in ("1.1.0", "1.3.0"):
        await deploy(catalog, await build(catalog, tmp_path / "work", version))  # staging, as after testing
    good = await ActivityEnvironment().run(acts.check_health, health_input("1.1.0"))
    assert good.verdict == Verdict.PASS and good.samples >= 60 and good.error_rate == 0
    bad = await ActivityEnvironment().run(acts.check_health, health_input("1.3.0"))
    assert bad.verdict == Verdict.FAIL and bad.error_rate == pytest.approx(0.3, abs=0.02)
