"""Deploy, roll back and ask for the greeter on Kubernetes: helm or Argo Rollouts, no shell.

NOT EXERCISED AGAINST A CLUSTER: relman's tests run this script with stand-in `helm` and
`kubectl` programs (they check which commands it runs, in which order, and how it reads
their answers); there is no Kubernetes cluster on the machine that built it.

relman runs argv lists, never a shell, so `helm upgrade ... && kubectl rollout status ...`
becomes this script's `helm` action: each step an argv list, run in order, the first that
fails ends the deploy with its exit status.

    k8s.py helm    --namespace NS --release NAME --chart CHART --version V [--timeout S]
    k8s.py argo    --namespace NS --rollout NAME --container C --image REPO --version V [--timeout S]
    k8s.py current --namespace NS --kind deployment|rollout --name NAME [--container C]

`helm` and `argo` are idempotent (the same version again changes nothing) and a rollback is
the same action with the version to restore. `current` prints the image tag of the
container once the Deployment's rollout is complete or the Rollout is Healthy, nothing when
the object does not exist, and fails (exit 1) while a rollout is in progress.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


class Failure(Exception):
    """One line for stderr; the exit status is `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run_steps(steps: list[list[str]]) -> None:
    """Each step in order; the first that fails stops the rest."""
    for argv in steps:
        print("+", " ".join(argv), flush=True)
        code = subprocess.call(argv)
        if code != 0:
            raise Failure(f"{argv[0]} {argv[1]} failed with exit {code}", code)


def helm_steps(args: argparse.Namespace) -> list[list[str]]:
    wait = f"{args.timeout}s"
    return [
        # --atomic: a failed upgrade is rolled back by helm itself before it exits non-zero.
        ["helm", "upgrade", "--install", "--atomic", "--wait", "--timeout", wait,
         "--namespace", args.namespace, args.release, args.chart,
         "--set-string", f"image.tag={args.version}"],
        ["kubectl", "rollout", "status", f"deployment/{args.release}",
         "--namespace", args.namespace, "--timeout", wait],
    ]  # fmt: skip


def argo_steps(args: argparse.Namespace) -> list[list[str]]:
    return [
        ["kubectl", "argo", "rollouts", "set", "image", args.rollout,
         f"{args.container}={args.image}:{args.version}", "--namespace", args.namespace],
        ["kubectl", "argo", "rollouts", "status", args.rollout,
         "--namespace", args.namespace, "--timeout", f"{args.timeout}s"],
    ]  # fmt: skip


def running_version(obj: dict[str, Any], kind: str, container: str | None) -> str:
    """The tag of the container's image, once everything runs it; Failure while it rolls."""
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    chosen = [c for c in containers if container in (None, c.get("name"))]
    if not chosen:
        raise Failure(f"no container {container or ''} in {kind} {obj.get('metadata', {}).get('name')}")
    image = str(chosen[0].get("image", ""))
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag:
        raise Failure(f"image {image!r} has no tag to tell the version by")
    status = obj.get("status", {})
    if kind == "rollout":
        if status.get("phase") != "Healthy":
            raise Failure(
                f"rollout is {status.get('phase', 'unknown')}, not Healthy: ask again once it settles"
            )
        return tag
    wanted = obj.get("spec", {}).get("replicas", 1)
    settled = (
        status.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )
    if not settled:
        raise Failure("deployment rollout in progress: ask again once it settles")
    return tag


def current(args: argparse.Namespace) -> None:
    resource = "rollouts.argoproj.io" if args.kind == "rollout" else "deployment"
    answer = subprocess.run(
        ["kubectl", "get", resource, args.name, "--namespace", args.namespace, "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if answer.returncode != 0:
        if "NotFound" in answer.stderr:
            return  # nothing runs: print nothing
        raise Failure(f"kubectl get failed: {answer.stderr.strip()[-300:]}")
    print(running_version(json.loads(answer.stdout), args.kind, args.container))


def main() -> int:
    parser = argparse.ArgumentParser(description="greeter on Kubernetes (helm or Argo Rollouts)")
    actions = parser.add_subparsers(dest="action", required=True)
    helm = actions.add_parser("helm", help="helm upgrade --install --atomic, then kubectl rollout status")
    argo = actions.add_parser("argo", help="kubectl argo rollouts set image, then status")
    ask = actions.add_parser("current", help="print the version that runs")
    for sub in (helm, argo, ask):
        sub.add_argument("--namespace", required=True)
    for sub in (helm, argo):
        sub.add_argument("--version", required=True)
        sub.add_argument("--timeout", type=int, default=240, help="seconds per step")
    helm.add_argument("--release", required=True)
    helm.add_argument("--chart", required=True)
    argo.add_argument("--rollout", required=True)
    argo.add_argument("--container", required=True)
    argo.add_argument("--image", required=True, help="the repository, without the tag")
    ask.add_argument("--kind", choices=("deployment", "rollout"), required=True)
    ask.add_argument("--name", required=True)
    ask.add_argument("--container")
    args = parser.parse_args()
    try:
        if args.action == "helm":
            run_steps(helm_steps(args))
        elif args.action == "argo":
            run_steps(argo_steps(args))
        else:
            current(args)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
