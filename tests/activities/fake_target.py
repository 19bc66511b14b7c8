"""A deploy target for the command-environment tests: `python fake_target.py KIND STATE [VERSION [PREVIOUS]]`.

KIND is deploy, rollback, current or undeploy. STATE/running holds the version that runs
(absent: none); every run appends `KIND VERSION PREVIOUS` to STATE/calls.log. A test makes it
misbehave with STATE/behaviour.json: `{"fail": "deploy"}` prints $DEPLOY_TOKEN and exits 3
in that kind, `{"current_prints": "1.0.9"}` makes `current` print that instead of the truth.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    kind, state = sys.argv[1], Path(sys.argv[2])
    version = sys.argv[3] if len(sys.argv) > 3 else ""
    previous = sys.argv[4] if len(sys.argv) > 4 else ""
    state.mkdir(parents=True, exist_ok=True)
    with (state / "calls.log").open("a") as log:
        log.write(f"{kind} {version} {previous}".rstrip() + "\n")
    behaviour_file = state / "behaviour.json"
    behaviour = json.loads(behaviour_file.read_text()) if behaviour_file.exists() else {}
    running = state / "running"
    if behaviour.get("fail") == kind:
        print("connecting with token", os.environ.get("DEPLOY_TOKEN", "<unset>"), flush=True)
        token = os.environ.get("DEPLOY_TOKEN")
        print(f"error: {kind} refused by the cluster (token {token})", file=sys.stderr)
        return 3
    if kind == "current":
        lie = behaviour.get("current_prints")
        if lie is not None:
            print(lie)
        elif running.exists():
            print(running.read_text().strip())
        return 0
    if kind in ("deploy", "rollback"):
        running.write_text(version + "\n")
    elif kind == "undeploy":
        running.unlink(missing_ok=True)
    print(f"{kind} done: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
