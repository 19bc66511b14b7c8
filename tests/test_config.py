"""Settings: defaults, and a bad value fails naming the variable; Temporal's own variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relman.config import DEFAULT_TEMPORAL_ADDRESS, load_settings, temporal_connect_config
from relman.contracts import TASK_QUEUE
from relman.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith(("RELMAN_", "TEMPORAL_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.task_queue == TASK_QUEUE
    assert s.data_dir == tmp_path.resolve() / ".relman"
    assert s.cmdb == f"sqlite:///{tmp_path.resolve() / '.relman' / 'cmdb.sqlite'}"
    # Outside the checkout the example catalog is still found (relative to the package).
    assert s.catalog.name == "catalog.yaml" and s.catalog.parent.name == "examples"
    assert s.activity_task_queue is None and s.metrics_port is None


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("RELMAN_CMDB_URL", "postgresql+psycopg://u:p@db:5432/relman")
    monkeypatch.setenv("RELMAN_ACTIVITY_TASK_QUEUE", "relman-heavy")
    monkeypatch.setenv("RELMAN_METRICS_PORT", "9464")
    monkeypatch.setenv("RELMAN_LOG_LEVEL", "debug")
    s = load_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.cmdb.startswith("postgresql+psycopg://")
    assert s.activity_task_queue == "relman-heavy"
    assert s.metrics_port == 9464 and s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELMAN_METRICS_PORT", "99999"),
        ("RELMAN_METRICS_PORT", "abc"),
        ("RELMAN_CMDB_URL", "not a url"),
        ("RELMAN_WEBHOOK_URL", "ftp://example.org/hook"),
        ("RELMAN_OTLP_ENDPOINT", "localhost:4317"),
        ("RELMAN_TRACE_CONSOLE", "maybe"),
        ("RELMAN_LOG_LEVEL", "loud"),
        ("RELMAN_TASK_QUEUE", ""),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"{name}: ")
    assert "\n" not in str(info.value)


def test_missing_catalog_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RELMAN_CATALOG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"^RELMAN_CATALOG: .*nope\.yaml does not exist"):
        load_settings().require_catalog()


def test_temporal_connection_the_temporal_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert temporal_connect_config() == {"target_host": DEFAULT_TEMPORAL_ADDRESS, "namespace": "default"}
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "releases")
    monkeypatch.setenv("TEMPORAL_API_KEY", "k")
    config = temporal_connect_config()
    assert config["target_host"] == "temporal.example:7233"
    assert config["namespace"] == "releases"
    assert config["api_key"] == "k" and config["tls"]


def test_temporal_profile_from_a_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text('[profile.staging]\naddress = "staging.example:7233"\nnamespace = "rel"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(toml))
    monkeypatch.setenv("TEMPORAL_PROFILE", "staging")
    config = temporal_connect_config()
    assert (config["target_host"], config["namespace"]) == ("staging.example:7233", "rel")
    monkeypatch.setenv("TEMPORAL_PROFILE", "nope")
    with pytest.raises(ConfigError, match="Profile 'nope' not found"):
        temporal_connect_config()
