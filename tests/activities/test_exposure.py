"""The SET_EXPOSURE activity: a real flagd file, read back through the OpenFeature SDK."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities import flag_reader, flagd
from relman.activities.exposure import ExposureActivities
from relman.catalog import CatalogError, load_catalog
from relman.contracts import Environment, ErrorType, ExposureInput

from .greeter_support import EXAMPLE_CATALOG, EXAMPLES, custom_catalog, example_catalog, example_keys
from .test_greeter_example import load_app

DIGEST = "ab" * 32


def exposure(
    percent: float,
    allow: list[str] | None = None,
    step: str = "stage",
    version: str = "1.3.0",
    stage: str = "",
) -> ExposureInput:
    return ExposureInput(
        release_id=f"release-greeter-{version}",
        step=step,
        service="greeter",
        environment=Environment.PRODUCTION,
        version=version,
        percent=percent,
        allow_list=allow or [],
        stage=stage,
        digest=DIGEST,
    )


def live(base: Path, version: str) -> None:
    """Production serves `version` (what the directory and command deploys leave behind)."""
    base.mkdir(parents=True, exist_ok=True)
    link = base / "current"
    link.unlink(missing_ok=True)
    os.symlink(version, link)


def greeter_flag(path: Path) -> dict[str, Any]:
    flag: dict[str, Any] = json.loads(path.read_text())["flags"]["greeter"]
    return flag


async def test_set_exposure_writes_the_flag_idempotently_and_reads_it_back(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    acts = ExposureActivities(catalog)
    base = catalog.service("greeter").env_dir(Environment.PRODUCTION)
    path = base / flagd.FLAGS_FILE
    live(base, "1.2.0")
    env = ActivityEnvironment()

    first = await env.run(
        acts.set_exposure, exposure(0, ["alice", "bob"], "stage:allow-list", stage="allow-list")
    )
    assert first.changed
    flag = greeter_flag(path)
    assert flag["variants"] == {"new": "1.3.0", "previous": "1.2.0"} and flag["defaultVariant"] == "previous"
    assert flag["metadata"]["release"] == "release-greeter-1.3.0" and flag["metadata"]["digest"] == DIGEST
    assert flag["metadata"]["stage"] == "allow-list"

    again = await env.run(
        acts.set_exposure, exposure(0, ["bob", "alice"], "stage:allow-list", stage="allow-list")
    )
    assert not again.changed
    assert len((base / flagd.FLAGS_LOG).read_text().splitlines()) == 1  # only changes are logged

    await env.run(acts.set_exposure, exposure(5, step="stage:five", stage="five"))
    flag = greeter_flag(path)
    assert flag["targeting"] == {"fractional": [["new", 500], ["previous", 9500]]}
    # Past go-live production runs the new version, yet the release keeps its `previous`.
    live(base, "1.3.0")
    await env.run(acts.set_exposure, exposure(100, step="expose-go-live", stage="go-live"))
    assert greeter_flag(path)["variants"]["previous"] == "1.2.0"

    killed = await env.run(acts.set_exposure, exposure(0, step="kill", stage="exposure-off"))
    assert killed.changed and killed.percent == 0
    flag = greeter_flag(path)
    assert "targeting" not in flag and flag["metadata"]["stage"] == "exposure-off"
    with flag_reader.FlagReader(path) as reader:
        assert {reader.evaluate("greeter", f"user-{i}").value for i in range(500)} == {"1.2.0"}
    lines = [json.loads(line) for line in (base / flagd.FLAGS_LOG).read_text().splitlines()]
    assert [line["stage"] for line in lines] == ["allow-list", "five", "go-live", "exposure-off"]
    assert lines[-1]["key"] == "release-greeter-1.3.0/kill"
    assert [p.name for p in base.iterdir() if p.name.startswith(".flags")] == []


async def test_the_next_release_captures_its_own_previous(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    acts = ExposureActivities(catalog)
    base = catalog.service("greeter").env_dir(Environment.PRODUCTION)
    env = ActivityEnvironment()
    # A first release: production runs nothing, so `previous` is the new version itself.
    await env.run(acts.set_exposure, exposure(1, version="1.1.0", stage="one"))
    assert greeter_flag(base / flagd.FLAGS_FILE)["variants"] == {"new": "1.1.0", "previous": "1.1.0"}
    live(base, "1.1.0")
    await env.run(acts.set_exposure, exposure(1, version="1.3.0", stage="one"))
    assert greeter_flag(base / flagd.FLAGS_FILE)["variants"] == {"new": "1.3.0", "previous": "1.1.0"}


async def test_catalog_flag_key_and_sample_size(tmp_path: Path) -> None:
    catalog = custom_catalog(tmp_path, exposure={"flag": "greeter.rollout", "sample_keys": 500})
    acts = ExposureActivities(catalog)
    path = catalog.service("greeter").env_dir(Environment.PRODUCTION) / flagd.FLAGS_FILE
    await ActivityEnvironment().run(acts.set_exposure, exposure(25, stage="quarter"))
    assert list(json.loads(path.read_text())["flags"]) == ["greeter.rollout"]


def test_catalog_refuses_a_bad_exposure_block(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="sample_keys"):
        custom_catalog(tmp_path, exposure={"sample_keys": 3})
    with pytest.raises(CatalogError, match="flag"):
        custom_catalog(tmp_path, exposure={"flag": "two\nlines"})
    with pytest.raises(CatalogError, match="reload_timeout"):
        custom_catalog(tmp_path, exposure={"reload_timeout": 60})
    with pytest.raises(CatalogError, match="Extra inputs are not permitted"):
        custom_catalog(tmp_path, exposure={"flags": "greeter"})


async def test_a_tampered_file_fails_the_step_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: what lands on disk is not what relman built (weights swapped)."""
    catalog = custom_catalog(tmp_path, exposure={"reload_timeout": 1})
    acts = ExposureActivities(catalog)
    real_write = flagd.write_document

    def tampering(path: Path, document: dict[str, Any]) -> None:
        document["flags"]["greeter"]["targeting"]["fractional"] = [["new", 9900], ["previous", 100]]
        real_write(path, document)

    monkeypatch.setattr(flagd, "write_document", tampering)
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(acts.set_exposure, exposure(1, stage="one"))
    assert failed.value.type == ErrorType.EXPOSURE_MISMATCH and failed.value.non_retryable
    assert "does not evaluate as written" in str(failed.value) and "expected 1%" in str(failed.value)


async def test_a_provider_answering_something_else_fails_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injected: the SDK's provider sends every key to `previous` whatever the file says."""
    catalog = custom_catalog(tmp_path, exposure={"reload_timeout": 0.5})
    acts = ExposureActivities(catalog)
    real = flag_reader.FlagReader.evaluate

    def always_previous(self: flag_reader.FlagReader, key: str, targeting_key: str) -> flag_reader.Evaluation:
        got = real(self, key, "never-new")
        return flag_reader.Evaluation(
            "previous", got.value if got.variant == "previous" else "?", metadata=got.metadata
        )

    monkeypatch.setattr(flag_reader.FlagReader, "evaluate", always_previous)
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(acts.set_exposure, exposure(0, ["alice"], stage="allow-list"))
    assert failed.value.type == ErrorType.EXPOSURE_MISMATCH
    assert "allow-listed key 'alice' got 'previous'" in str(failed.value)


async def test_a_schema_refusal_fails_the_step_and_leaves_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = example_catalog(tmp_path / "data")
    acts = ExposureActivities(catalog)
    path = catalog.service("greeter").env_dir(Environment.PRODUCTION) / flagd.FLAGS_FILE
    await ActivityEnvironment().run(acts.set_exposure, exposure(1, stage="one"))
    before = path.read_bytes()
    real = flagd.definition
    monkeypatch.setattr(flagd, "definition", lambda f: {**real(f), "state": "ON"})  # fault injected
    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(acts.set_exposure, exposure(5, stage="five"))
    assert failed.value.type == ErrorType.EXPOSURE_MISMATCH and failed.value.non_retryable
    assert failed.value.message.startswith("flag definition refused: flags/greeter/state")
    assert path.read_bytes() == before


async def test_the_greeter_serves_what_relman_exposes(tmp_path: Path) -> None:
    """relman writes the flag; the example service, reading it through OpenFeature, follows."""
    catalog = example_catalog(tmp_path / "data")
    acts = ExposureActivities(catalog)
    prod = catalog.service("greeter").env_dir(Environment.PRODUCTION)
    staging = catalog.service("greeter").env_dir(Environment.STAGING)
    for base, version, behaviour in ((prod, "1.2.0", {}), (staging, "1.3.0", {"bug": "tests"})):
        (base / version).mkdir(parents=True)
        (base / version / "behaviour.json").write_text(json.dumps(behaviour))
    live(prod, "1.2.0")
    env = ActivityEnvironment()
    await env.run(acts.set_exposure, exposure(0, ["alice"], stage="allow-list"))
    server, svc = load_app().serve(0, flags=prod / flagd.FLAGS_FILE, releases=[prod, staging])
    url = f"http://127.0.0.1:{server.server_address[1]}/greet?name="

    def greet(name: str) -> dict[str, Any]:
        with urllib.request.urlopen(url + name, timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body

    try:
        assert (greet("alice")["version"], greet("alice")["message"]) == ("1.3.0", "hello alice")
        assert (greet("bob")["version"], greet("bob")["variant"]) == ("1.2.0", "previous")
        await env.run(acts.set_exposure, exposure(100, step="expose-go-live", stage="go-live"))
        deadline = asyncio.get_running_loop().time() + 5
        while greet("bob")["variant"] != "new":
            assert asyncio.get_running_loop().time() < deadline, "go-live not served within 5 s"
            await asyncio.sleep(0.01)
        assert greet("bob")["version"] == "1.3.0"
    finally:
        server.shutdown()
        svc.router.close()


async def test_two_services_exposed_at_once_share_one_file(tmp_path: Path) -> None:
    """Two services whose production is one directory: both flags land, neither is lost."""
    raw = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    for spec in [*raw["services"].values(), *raw.get("train_suites", [])]:  # copied: workdirs absolute
        spec["workdir"] = str(EXAMPLES / spec.get("workdir", "."))
    greeter = raw["services"]["greeter"]
    billing = copy.deepcopy(greeter)
    billing["environments"]["staging"] = {"base_dir": "{data_dir}/envs/billing/staging"}
    raw["services"]["billing"] = billing
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(raw))
    example_keys(tmp_path / "data")
    acts = ExposureActivities(load_catalog(tmp_path / "catalog.yaml", data_dir=tmp_path / "data"))

    def inp(service: str, percent: float) -> ExposureInput:
        return exposure(percent, stage="five").model_copy(
            update={"service": service, "release_id": f"release-{service}-1.3.0"}
        )

    env = ActivityEnvironment()
    await asyncio.gather(
        env.run(acts.set_exposure, inp("greeter", 5)), env.run(acts.set_exposure, inp("billing", 25))
    )
    path = acts.flags_path("greeter", Environment.PRODUCTION)
    assert path == acts.flags_path("billing", Environment.PRODUCTION)
    flags = json.loads(path.read_text())["flags"]
    assert {k: v["metadata"]["percent"] for k, v in flags.items()} == {"billing": 25.0, "greeter": 5.0}
    assert len((path.parent / flagd.FLAGS_LOG).read_text().splitlines()) == 2
