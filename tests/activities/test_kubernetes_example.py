"""The Kubernetes example (examples/catalog-kubernetes.yaml, greeter/kubernetes/k8s.py) without a cluster.

Nothing here talks to Kubernetes: `helm` and `kubectl` are stand-ins (fake_k8s.py) that log
their argv and keep one Deployment's and one Rollout's image tag. What is checked is the
relman side: the example environments validate, deploys and rollbacks run the helm and
Argo Rollouts steps in order through the command adapter, the first failing step ends the
deploy, and `current` reads the tag only from a settled rollout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.exceptions import ApplicationError

from relman.catalog import Catalog, EnvironmentSpec
from relman.contracts import Environment

from .greeter_support import build, custom_catalog, deploy
from .test_command_deploy import rollback

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
K8S = EXAMPLES / "greeter" / "kubernetes" / "k8s.py"
FAKE = Path(__file__).with_name("fake_k8s.py")


def example_environments() -> dict[str, Any]:
    raw = yaml.safe_load((EXAMPLES / "catalog-kubernetes.yaml").read_text())
    environments: dict[str, Any] = raw["services"]["greeter"]["environments"]
    return environments


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`helm` and `kubectl` stand-ins first on PATH; their state and call log in the result."""
    folder, bin_dir = tmp_path / "k8s", tmp_path / "bin"
    folder.mkdir()
    bin_dir.mkdir()
    for program in ("helm", "kubectl"):
        exe = bin_dir / program
        exe.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(FAKE.parent)!r})\n"
            f"from fake_k8s import main\nsys.exit(main({program!r}))\n"
        )
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_K8S_DIR", str(folder))
    return folder


def calls(cluster: Path) -> list[str]:
    log = cluster / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def k8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(K8S), *args], capture_output=True, text=True, check=False)


def test_the_example_environments_validate() -> None:
    for name, raw in example_environments().items():
        spec = EnvironmentSpec.model_validate(raw, context={"catalog_dir": EXAMPLES, "data_dir": "/data"})
        assert spec.type == "command" and spec.rollback == spec.deploy, name
        assert spec.timeout <= 600 and "{version}" in spec.deploy


@pytest.fixture
async def k8s_catalog(tmp_path: Path, cluster: Path) -> Catalog:
    # The example's environments on the example greeter service, in a tmp data dir.
    environments = example_environments()
    for env in environments.values():
        env["timeout"] = 60
    # Commands see the catalog's `env`, never the worker's environment beyond PATH and a few.
    return custom_catalog(tmp_path, environments=environments, env={"FAKE_K8S_DIR": str(cluster)})


async def test_helm_and_argo_deploys_and_rollbacks_through_the_command_adapter(
    k8s_catalog: Catalog, cluster: Path, tmp_path: Path
) -> None:
    pkgs = {v: await build(k8s_catalog, tmp_path / "work", v) for v in ("1.1.0", "1.1.1")}
    await deploy(k8s_catalog, pkgs["1.1.0"])
    helm = [c for c in calls(cluster) if not c.startswith("kubectl get")]
    assert helm == [
        "helm upgrade --install --atomic --wait --timeout 240s --namespace greeter-staging greeter "
        "oci://registry.example.com/charts/greeter --set-string image.tag=1.1.0",
        "kubectl rollout status deployment/greeter --namespace greeter-staging --timeout 240s",
    ]
    await deploy(k8s_catalog, pkgs["1.1.1"])
    result = await rollback(k8s_catalog, "1.1.1")
    assert (result.version, result.previous_version) == ("1.1.0", "1.1.1")
    assert json.loads((cluster / "state.json").read_text())["deployment"] == "1.1.0"

    production = await deploy(k8s_catalog, pkgs["1.1.0"], env=Environment.PRODUCTION)
    assert production.changed and production.previous_version is None
    assert [c for c in calls(cluster) if c.startswith("kubectl argo")] == [
        "kubectl argo rollouts set image greeter greeter=registry.example.com/greeter:1.1.0"
        " --namespace greeter",
        "kubectl argo rollouts status greeter --namespace greeter --timeout 240s",
    ]


async def test_a_failing_helm_stops_before_the_rollout_check(
    k8s_catalog: Catalog, cluster: Path, tmp_path: Path
) -> None:
    (cluster / "fail.json").write_text(json.dumps({"helm upgrade": 2}))
    package = await build(k8s_catalog, tmp_path / "work", "1.1.0")
    with pytest.raises(ApplicationError, match=r"deploy command failed \(exit 2: error: helm upgrade failed"):
        await deploy(k8s_catalog, package)
    assert not any(c.startswith("kubectl rollout") for c in calls(cluster))


def test_current_reads_only_a_settled_rollout(cluster: Path) -> None:
    ask = ("current", "--namespace", "ns", "--name", "greeter", "--container", "greeter")
    nothing = k8s(*ask, "--kind", "deployment")
    assert (nothing.returncode, nothing.stdout) == (0, "")  # not found: nothing runs
    (cluster / "state.json").write_text(json.dumps({"deployment": "1.2.3", "rollout": "1.2.4"}))
    assert k8s(*ask, "--kind", "deployment").stdout == "1.2.3\n"  # a registry port is no tag
    assert k8s(*ask, "--kind", "rollout").stdout == "1.2.4\n"
    (cluster / "fail.json").write_text(json.dumps({"phase": "Progressing"}))
    rolling = k8s(*ask, "--kind", "rollout")
    assert rolling.returncode == 1 and "rollout is Progressing, not Healthy" in rolling.stderr
    wrong = k8s(
        "current", "--namespace", "ns", "--name", "greeter", "--kind", "deployment", "--container", "x"
    )
    assert wrong.returncode == 1 and "no container x" in wrong.stderr
