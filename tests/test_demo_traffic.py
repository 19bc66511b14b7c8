"""The demo's traffic: Prometheus analysis when the binary exists, the probe otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from relman.catalog import load_catalog, people_names
from relman.demo import EXAMPLES
from relman.demo_traffic import demo_catalog, start_traffic
from relman.identity.keys import WORKER, ensure_keys


def test_without_prometheus_the_demo_keeps_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus here
    traffic = start_traffic(EXAMPLES / "catalog.yaml", tmp_path)
    assert traffic.catalog == EXAMPLES / "catalog.yaml"
    assert traffic.health == "health from the greeter's probe (no `prometheus` binary on PATH)"
    assert traffic.processes == [] and traffic.prometheus is None
    traffic.stop()


def test_the_demo_catalog_is_the_example_with_analysis(tmp_path: Path) -> None:
    example = EXAMPLES / "catalog.yaml"
    ensure_keys(tmp_path / "keys", [*people_names(example), WORKER])
    written = demo_catalog(example, tmp_path / "catalog.yaml", "http://127.0.0.1:9999")
    catalog = load_catalog(written, data_dir=tmp_path)
    spec = catalog.service("greeter")
    assert spec.workdir == EXAMPLES / "greeter"
    assert spec.analysis is not None and spec.analysis.address == "http://127.0.0.1:9999"
    assert [m.name for m in spec.analysis.metrics] == ["error_rate"]
    # everything else is the example's
    assert spec.stages == load_catalog(example, data_dir=tmp_path).service("greeter").stages
