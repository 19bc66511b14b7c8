"""Shared set-up of the tests on the example catalog: its people's keys, the catalog on a tmp data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import ActivityEnvironment

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.catalog import Catalog, load_catalog
from relman.contracts import BuildInput, DeployInput, Environment, ReleasePackage
from relman.identity.keys import WORKER, Signer, ensure_keys, key_path, write_private
from tests import people

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CATALOG = EXAMPLES / "catalog.yaml"
EXAMPLE_PEOPLE: list[str] = list(yaml.safe_load(EXAMPLE_CATALOG.read_text())["people"])
"""The people the example catalog declares (their `.pub` files live in `{data_dir}/keys`)."""


def example_keys(data_dir: Path) -> dict[str, Signer]:
    """The example's people and the worker's evidence key, as key files in `data_dir/keys`.

    The example catalog reads each person's `.pub` there, so this runs before it loads. The
    people sign with the keys of `tests.people` (so `people.sign` and these signers agree);
    `ensure_keys` creates the rest (the worker's) and returns every signer, by name.
    """
    keys_dir = data_dir / "keys"
    for name in EXAMPLE_PEOPLE:
        if not key_path(keys_dir, name).exists():
            write_private(key_path(keys_dir, name), people.PEOPLE[name])
    return ensure_keys(keys_dir, [*EXAMPLE_PEOPLE, WORKER])


def example_catalog(data_dir: Path) -> Catalog:
    example_keys(data_dir)
    return load_catalog(EXAMPLE_CATALOG, data_dir=data_dir)


def custom_catalog(tmp_path: Path, **overrides: Any) -> Catalog:
    """The example's greeter entry with some sections replaced (e.g. a hanging test suite)."""
    raw = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    raw["services"]["greeter"].update(overrides)
    for spec in [*raw["services"].values(), *raw.get("train_suites", [])]:  # copied: workdirs absolute
        spec["workdir"] = str(EXAMPLES / spec.get("workdir", "."))
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw))
    example_keys(tmp_path / "data")
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
    catalog: Catalog,
    package: ReleasePackage,
    env: Environment = Environment.STAGING,
    step: str = "deploy",
    allow_downgrade: bool = False,
) -> Any:
    inp = DeployInput(
        release_id=f"release-greeter-{package.version}",
        step=step,
        service="greeter",
        environment=env,
        version=package.version,
        package=package,
        allow_downgrade=allow_downgrade,
    )
    return await ActivityEnvironment().run(EnvironmentActivities(catalog).deploy, inp)
