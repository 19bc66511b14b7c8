"""The service catalog: the example loads; bad catalogs fail naming file, service and field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from relman.catalog import CatalogError, UnknownService, load_catalog, render_argv
from relman.contracts import Environment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "catalog.yaml"


def base_service(workdir: str = "src") -> dict[str, Any]:
    return {
        "workdir": workdir,
        "build": {"command": ["{python}", "build.py", "{version}"], "artifacts": ["out.txt"]},
        "tests": [{"name": "unit", "command": ["{python}", "-m", "pytest", "--junitxml={junit}"]}],
        "environments": {"staging": {"base_dir": "envs/staging"}, "production": {"base_dir": "envs/prod"}},
        "health": {"http": "http://127.0.0.1:9999/metrics"},
        "stages": [
            {"name": "one", "percent": 1, "bake_seconds": 0},
            {"name": "all", "percent": 50, "bake_seconds": 0},
        ],
        "cab": {"members": ["alice", "bob"], "quorum": 2},
    }


def write(tmp_path: Path, service: dict[str, Any], **top: Any) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"services": {"greeter": service}, **top}))
    return path


def error_of(tmp_path: Path, service: dict[str, Any], **top: Any) -> str:
    with pytest.raises(CatalogError) as exc:
        load_catalog(write(tmp_path, service, **top), data_dir=tmp_path / "data")
    return str(exc.value)


def test_example_catalog_loads_from_any_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    catalog = load_catalog(EXAMPLE, data_dir=tmp_path / "data")
    spec = catalog.service("greeter")
    assert spec.workdir == EXAMPLE.parent / "greeter"
    assert spec.env_dir(Environment.STAGING) == tmp_path / "data" / "envs" / "greeter" / "staging"
    profile = catalog.profile("greeter")
    assert profile.cab_members == ["alice", "bob", "carol", "dave"] and profile.cab_quorum == 2
    assert profile.ecab_members == ["erin"]
    assert [s.percent for s in profile.stages] == [0, 1, 5, 25]
    assert profile.acceptance.max_error_rate == spec.health.max_error_rate


def test_relative_paths_resolve_against_the_catalog(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, base_service()), data_dir=tmp_path / "data")
    assert catalog.service("greeter").workdir == tmp_path / "src"
    assert catalog.service("greeter").env_dir(Environment.PRODUCTION) == tmp_path / "envs" / "prod"


def test_unknown_service_lists_known_ones(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, base_service()))
    with pytest.raises(UnknownService) as exc:
        catalog.profile("checkout")
    assert "checkout" in str(exc.value) and "greeter" in str(exc.value)
    assert isinstance(exc.value, KeyError)


def test_string_command_is_refused(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = "python build.py {version}"
    msg = error_of(tmp_path, svc)
    assert "catalog.yaml: services.greeter.build.command:" in msg
    assert "argv list" in msg


def test_empty_argv_is_refused(tmp_path: Path) -> None:
    svc = base_service()
    svc["tests"][0]["command"] = []
    assert "services.greeter.tests.0.command" in error_of(tmp_path, svc)


def test_missing_workdir(tmp_path: Path) -> None:
    msg = error_of(tmp_path, base_service(workdir="nowhere"))
    assert "services.greeter.workdir" in msg and "does not exist" in msg


def test_unknown_executable(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = ["no-such-tool-xyz", "build"]
    msg = error_of(tmp_path, svc)
    assert "build.command" in msg and "no-such-tool-xyz" in msg and "not found" in msg


def test_quorum_larger_than_roster(tmp_path: Path) -> None:
    svc = base_service()
    svc["cab"] = {"members": ["alice"], "quorum": 2}
    msg = error_of(tmp_path, svc)
    assert "services.greeter.cab" in msg and "quorum 2 exceeds the roster size 1" in msg


def test_stage_percents_must_increase(tmp_path: Path) -> None:
    svc = base_service()
    svc["stages"] = [
        {"name": "a", "percent": 5, "bake_seconds": 0},
        {"name": "b", "percent": 5, "bake_seconds": 0},
    ]
    assert "services.greeter.stages" in error_of(tmp_path, svc)


def test_unknown_placeholder(tmp_path: Path) -> None:
    svc = base_service()
    svc["build"]["command"] = ["{python}", "build.py", "{secret_token}"]
    assert "unknown placeholder" in error_of(tmp_path, svc)


def test_health_url_must_be_local(tmp_path: Path) -> None:
    svc = base_service()
    svc["health"] = {"http": "http://example.com/metrics"}
    assert "services.greeter.health.http" in error_of(tmp_path, svc)


def test_relationship_target_must_be_known(tmp_path: Path) -> None:
    svc = base_service()
    svc["relationships"] = [{"type": "depends_on", "target": "ghost-db"}]
    assert "ghost-db" in error_of(tmp_path, svc)
    ok = copy.deepcopy(svc)
    catalog = load_catalog(write(tmp_path, ok, configuration_items=[{"name": "ghost-db"}]))
    assert catalog.service("greeter").relationships[0].target == "ghost-db"


def test_placeholders_substitute_whole_values_without_splitting() -> None:
    argv = render_argv(
        ["tool", "--out={package_dir}", "{version}"], {"package_dir": "/a b;rm -rf", "version": "1.0.0"}
    )
    assert argv[1:] == ["--out=/a b;rm -rf", "1.0.0"]


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    with pytest.raises(CatalogError, match="mapping"):
        load_catalog(tmp_path / "bad.yaml")


def test_secrets_are_names_never_the_workers_own_settings(tmp_path: Path) -> None:
    svc = base_service()
    svc["secrets"] = ["registry-token"]
    assert "services.greeter.secrets" in error_of(tmp_path, svc)
    svc["secrets"] = ["REGISTRY_TOKEN", "RELMAN_CMDB_URL"]
    error = error_of(tmp_path, svc)
    assert "RELMAN_CMDB_URL: the worker's own settings are never passed to commands" in error


def test_secret_problems_name_the_service_and_the_variable(tmp_path: Path) -> None:
    svc = base_service()
    svc["secrets"] = ["REGISTRY_TOKEN", "SIGNING_KEY"]
    catalog = load_catalog(write(tmp_path, svc), data_dir=tmp_path / "data")
    assert catalog.secret_problems({"REGISTRY_TOKEN": "tok-123456", "SIGNING_KEY": "k"}) == [
        "services.greeter.secrets: SIGNING_KEY is shorter than 4 characters"
    ]
    assert catalog.secret_problems({}) == [
        "services.greeter.secrets: REGISTRY_TOKEN is not set in the worker's environment",
        "services.greeter.secrets: SIGNING_KEY is not set in the worker's environment",
    ]
