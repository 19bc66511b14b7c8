"""Settings: defaults, and a bad value fails naming the variable; Temporal's own variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relman.config import (
    DEFAULT_TEMPORAL_ADDRESS,
    EXAMPLE_CATALOG,
    PACKAGE_ROOT,
    load_settings,
    temporal_connect_config,
)
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
    assert s.activity_task_queue is None and s.metrics_port is None


def test_outside_the_checkout_there_is_no_default_catalog(tmp_path: Path) -> None:
    """Run from another directory, the example catalog is never picked up silently."""
    s = load_settings()
    assert s.catalog == tmp_path.resolve() / "catalog.yaml" and not s.catalog.exists()
    assert s.catalog_source == "./catalog.yaml (RELMAN_CATALOG unset)"
    with pytest.raises(ConfigError) as info:
        s.require_catalog()
    assert str(info.value) == (
        f"RELMAN_CATALOG: not set, and there is no {tmp_path.resolve() / 'catalog.yaml'}; "
        "set it to your service catalog file"
    )


def test_a_catalog_in_the_current_directory_is_the_default(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text("services: {}\n")
    s = load_settings()
    assert s.catalog == tmp_path.resolve() / "catalog.yaml" and s.require_catalog() == s.catalog
    assert s.catalog_source == "./catalog.yaml (RELMAN_CATALOG unset)"
    assert s.data_dir_source == "./.relman (RELMAN_DATA_DIR unset)"


def test_inside_the_checkout_the_example_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PACKAGE_ROOT / "relman")
    s = load_settings()
    assert s.catalog == EXAMPLE_CATALOG and s.catalog.is_file()
    assert s.catalog_source.startswith("the checkout's example")
    # ... unless that directory has its own catalog.yaml: the current directory comes first.
    monkeypatch.chdir(PACKAGE_ROOT / "examples")
    assert load_settings().catalog == EXAMPLE_CATALOG


def test_relman_catalog_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text("services: {}\n")
    other = tmp_path / "elsewhere.yaml"
    monkeypatch.setenv("RELMAN_CATALOG", str(other))
    monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "d"))
    s = load_settings()
    assert s.catalog == other and s.catalog_source == "RELMAN_CATALOG"
    assert s.data_dir_source == "RELMAN_DATA_DIR"


def run_worker_process(cwd: Path, **env: str) -> str:
    """`python -m relman.worker` in `cwd` with Temporal unreachable: its log until it gives up."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))}
    clean.update(TEMPORAL_ADDRESS="127.0.0.1:1", RELMAN_LOG_FORMAT="console", **env)
    done = subprocess.run(
        [sys.executable, "-m", "relman.worker"],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_worker_says_which_catalog_and_cmdb_it_uses(tmp_path: Path) -> None:
    from tests.activities.greeter_support import example_keys

    example_keys(tmp_path / ".relman")
    out = run_worker_process(tmp_path, RELMAN_CATALOG=str(EXAMPLE_CATALOG))
    assert "worker configuration" in out
    assert f"catalog={EXAMPLE_CATALOG}" in out and "catalog_from=RELMAN_CATALOG" in out
    assert f"data_dir={tmp_path.resolve() / '.relman'}" in out
    # A worker started in another directory says it is about to start a second, empty CMDB.
    assert "no CMDB here yet: a new, empty one will be created" in out
    assert str(tmp_path.resolve() / ".relman" / "cmdb.sqlite") in out
    assert "cannot reach Temporal" in out

    again = run_worker_process(tmp_path, RELMAN_CATALOG=str(EXAMPLE_CATALOG))
    assert "no CMDB here yet" not in again, "the second start finds the CMDB the first made"


def test_the_worker_without_a_catalog_says_where_it_looked(tmp_path: Path) -> None:
    out = run_worker_process(tmp_path)
    assert f"catalog={tmp_path.resolve() / 'catalog.yaml'}" in out
    assert "RELMAN_CATALOG: not set, and there is no" in out
    assert not (tmp_path / ".relman" / "cmdb.sqlite").exists(), "nothing created before refusing"


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
