"""Build activity with the example's real build command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.build import MANIFEST, BuildActivities, sha256_file, verify_package
from relman.contracts import BuildInput, ErrorType

from .greeter_support import build, custom_catalog, example_catalog


async def test_build_produces_a_verified_package(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    package = await build(catalog, tmp_path / "work", "1.1.0")
    root = Path(package.path)
    assert root == tmp_path / "work" / "release-greeter-1.1.0" / "package"
    names = {a.name for a in package.artifacts}
    assert {"app.py", "VERSION", "behaviour.json", "tests/unit/test_greeting.py"} <= names
    for art in package.artifacts:
        assert sha256_file(root / art.name) == art.sha256
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["commit"] == "abc1234" and manifest["version"] == "1.1.0"
    assert manifest["components"] == [{"name": "greeter", "version": "1.1.0"}]
    assert "current" in manifest["deploy_instructions"]
    assert "greeter 1.1.0" in package.release_notes
    assert (root / "VERSION").read_text().strip() == "1.1.0"
    assert (tmp_path / "work" / "release-greeter-1.1.0" / "build.log").exists()


async def test_build_is_idempotent_and_rebuilds_a_tampered_package(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    first = await build(catalog, tmp_path / "work", "1.1.0")
    stamp = (Path(first.path) / MANIFEST).stat().st_mtime_ns
    again = await build(catalog, tmp_path / "work", "1.1.0")
    assert again == first
    assert (Path(first.path) / MANIFEST).stat().st_mtime_ns == stamp  # reused, not rebuilt

    (Path(first.path) / "app.py").write_text("tampered")
    with pytest.raises(Exception, match="sha256"):
        verify_package(Path(first.path))
    rebuilt = await build(catalog, tmp_path / "work", "1.1.0")
    verify_package(Path(rebuilt.path))
    assert rebuilt.digest == first.digest  # same sources, same bytes


async def test_failing_build_is_non_retryable_with_output_tail(tmp_path: Path) -> None:
    catalog = custom_catalog(
        tmp_path,
        build={
            "command": ["{python}", "-c", "import sys; print('compiler says no'); sys.exit(3)"],
            "artifacts": ["app.py"],
        },
    )
    inp = BuildInput(
        release_id="release-greeter-9.9.9", step="build", service="greeter", version="9.9.9", commit="abc1234"
    )
    with pytest.raises(ApplicationError) as exc:
        await ActivityEnvironment().run(BuildActivities(catalog, tmp_path / "work").build_package, inp)
    assert exc.value.type == ErrorType.BUILD_FAILED and exc.value.non_retryable
    assert "compiler says no" in exc.value.message and "exit 3" in exc.value.message
    assert not (tmp_path / "work" / "release-greeter-9.9.9" / "package").exists()


async def test_missing_artifact_is_package_invalid(tmp_path: Path) -> None:
    catalog = custom_catalog(
        tmp_path,
        build={"command": ["{python}", "-c", "pass"], "artifacts": ["app.py"]},
    )
    inp = BuildInput(
        release_id="release-greeter-9.9.8", step="build", service="greeter", version="9.9.8", commit="abc1234"
    )
    with pytest.raises(ApplicationError) as exc:
        await ActivityEnvironment().run(BuildActivities(catalog, tmp_path / "work").build_package, inp)
    assert exc.value.type == ErrorType.PACKAGE_INVALID and "app.py" in exc.value.message


async def test_a_failing_build_never_carries_a_secret_into_its_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "reg-9c1e44ab07"
    monkeypatch.setenv("REGISTRY_TOKEN", token)
    catalog = custom_catalog(
        tmp_path,
        secrets=["REGISTRY_TOKEN"],
        build={
            "command": [
                "{python}",
                "-c",
                "import os, sys; print('push refused for', os.environ['REGISTRY_TOKEN']); sys.exit(2)",
            ],
            "artifacts": ["app.py"],
        },
    )
    inp = BuildInput(
        release_id="release-greeter-9.9.8", step="build", service="greeter", version="9.9.8", commit="abc1234"
    )
    with pytest.raises(ApplicationError) as exc:
        await ActivityEnvironment().run(BuildActivities(catalog, tmp_path / "work").build_package, inp)
    # The command had the token (it printed it); the failure, bound for history and CMDB, has not.
    assert exc.value.type == ErrorType.BUILD_FAILED
    assert "push refused for ***" in exc.value.message and token not in exc.value.message
