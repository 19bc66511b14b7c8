"""Shared set-up of the activity tests: the example catalog on a temporary data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import ActivityEnvironment

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.catalog import Catalog, load_catalog
from relman.contracts import BuildInput, DeployInput, Environment, ReleasePackage

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CATALOG = EXAMPLES / "catalog.yaml"


def example_catalog(data_dir: Path) -> Catalog:
    return load_catalog(EXAMPLE_CATALOG, data_dir=data_dir)


def custom_catalog(tmp_path: Path, **overrides: Any) -> Catalog:
    """The example's greeter entry with some sections replaced (e.g. a hanging test suite)."""
    raw = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    raw["services"]["greeter"].update(overrides)
    raw["services"]["greeter"]["workdir"] = str(EXAMPLES / "greeter")
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_catalog(path, data_dir=tmp_path / "data")


class Recorder(ActivityEnvironment):
    """An ActivityEnvironment that keeps every heartbeat."""

    def __init__(self) -> None:
        super().__init__()
        self.heartbeats: list[Any] = []
        self.on_heartbeat = lambda *details: self.heartbeats.append(details)


async def build(
    catalog: Catalog, work_root: Path, version: str, release_id: str | None = None
) -> ReleasePackage:
    inp = BuildInput(
        release_id=release_id or f"release-greeter-{version}",
        step="build",
        service="greeter",
        version=version,
        commit="abc1234",
    )
    return await ActivityEnvironment().run(BuildActivities(catalog, work_root).build_package, inp)


async def deploy(
    catalog: Catalog, package: ReleasePackage, env: Environment = Environment.STAGING, step: str = "deploy"
) -> Any:
    inp = DeployInput(
        release_id=f"release-greeter-{package.version}",
        step=step,
        service="greeter",
        environment=env,
        version=package.version,
        package=package,
    )
    return await ActivityEnvironment().run(EnvironmentActivities(catalog).deploy, inp)
