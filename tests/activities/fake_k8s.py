"""Stand-ins for `helm` and `kubectl`: they log their argv and keep one Deployment and one Rollout.

The test puts executables named `helm` and `kubectl` first on PATH that call `main(name)`.
State lives in $FAKE_K8S_DIR/state.json (the image tag of each object, absent: not found);
$FAKE_K8S_DIR/calls.log gets one line per call; $FAKE_K8S_DIR/fail.json can name a program
and subcommand to fail (`{"helm upgrade": 2}`) or a phase for the Rollout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def main(program: str) -> int:
    folder = Path(os.environ["FAKE_K8S_DIR"])
    args = sys.argv[1:]
    with (folder / "calls.log").open("a") as log:
        log.write(" ".join([program, *args]) + "\n")
    state_file, fail_file = folder / "state.json", folder / "fail.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    fail: dict[str, Any] = json.loads(fail_file.read_text()) if fail_file.exists() else {}
    code = fail.get(f"{program} {args[0]}")
    if code:
        print(f"{program}: {args[0]} failed (injected)", file=sys.stderr)
        return int(code)
    if program == "helm" and args[:2] == ["upgrade", "--install"]:
        state["deployment"] = args[args.index("--set-string") + 1].split("=", 1)[1]
    elif args[:4] == ["argo", "rollouts", "set", "image"]:
        state["rollout"] = args[5].rsplit(":", 1)[1]
    elif args[:1] == ["get"]:
        kind = "rollout" if args[1].startswith("rollouts") else "deployment"
        tag = state.get(kind)
        if tag is None:
            print(f'Error from server (NotFound): {args[1]} "{args[2]}" not found', file=sys.stderr)
            return 1
        obj: dict[str, Any] = {
            "metadata": {"name": args[2], "generation": 2},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "greeter", "image": f"registry.example.com:5000/greeter:{tag}"}
            ]}}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2},
        }  # fmt: skip
        if kind == "rollout":
            obj["status"] = {"phase": fail.get("phase", "Healthy")}
        print(json.dumps(obj))
    state_file.write_text(json.dumps(state))
    return 0
