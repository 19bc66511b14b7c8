"""docker-compose.yml without a Docker engine: it parses, its wiring holds, its settings are valid."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from relman.config import TEMPORAL_ENV_VARS, Settings, load_settings
from relman.visibility import ALL_KEYS

ROOT = Path(__file__).resolve().parent.parent
WORKER = "relman-worker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _depends(service: dict[str, Any]) -> list[str]:
    deps = service.get("depends_on") or []
    return list(deps) if isinstance(deps, list | dict) else []


def test_every_dependency_exists_and_the_graph_has_no_cycle(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep in _depends(svc):
            assert dep in services, f"{name} depends on missing service {dep}"

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        for dep in _depends(services[name]):
            visit(dep, (*path, name))

    for name in services:
        visit(name, ())


def test_worker_needs_database_server_and_search_attributes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    needed = set()
    stack = [WORKER]
    while stack:
        for dep in _depends(services[stack.pop()]):
            if dep not in needed:
                needed.add(dep)
                stack.append(dep)
    images = {services[n].get("image", "").split(":")[0] for n in needed}
    assert {"postgres", "temporalio/server", "temporalio/admin-tools"} <= images
    assert services[WORKER]["build"] in (".", {"context": "."})
    # The worker starts only after the one-shots have finished successfully.
    deps = services[WORKER]["depends_on"]
    for one_shot in ("temporal-search-attributes",):
        assert deps[one_shot]["condition"] == "service_completed_successfully"
    assert "temporalio/ui" in {s.get("image", "").split(":")[0] for s in services.values()}


def test_worker_environment_is_valid_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(compose["services"][WORKER])
    fields = {f"RELMAN_{name.upper()}" for name in Settings.model_fields}
    for key in env:
        assert key in fields or key in TEMPORAL_ENV_VARS, (
            f"{key} is neither a relman setting nor a Temporal one"
        )
    for key in [k for k in os.environ if k.startswith("RELMAN_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.metrics_port is not None and settings.metrics_host == "0.0.0.0"
    assert str(settings.catalog).startswith("/app/")


def test_cmdb_and_temporal_point_at_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = _env(services[WORKER])
    url = make_url(env["RELMAN_CMDB_URL"])
    assert url.get_backend_name() == "postgresql"
    assert url.host in services and services[url.host]["image"].startswith("postgres:")
    # The schema one-shot creates the CMDB's database on that same server.
    schema_script = "".join(services["temporal-schema"]["command"])
    assert f"--db {url.database} create" in schema_script
    host = env["TEMPORAL_ADDRESS"].split(":")[0]
    assert services[host]["image"].startswith("temporalio/server:")


def test_search_attribute_one_shot_registers_relman_keys(compose: dict[str, Any]) -> None:
    script = "".join(compose["services"]["temporal-search-attributes"]["command"])
    pairs = dict(re.findall(r"(Release\w+):(\w+)", script))
    types = {"KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList"}
    expected = {k.name: types[k.indexed_value_type.name] for k in ALL_KEYS}
    assert pairs == expected


def test_mounted_files_and_dockerfile_exist(compose: dict[str, Any]) -> None:
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{source} is mounted but missing"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^CMD \["relman", "worker"\]', dockerfile, re.M)
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for item in copied.split():
            assert (ROOT / item).exists(), f"Dockerfile copies missing {item}"
