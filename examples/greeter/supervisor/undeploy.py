"""`python undeploy.py --supervisor DIR --program NAME`: stop and remove the program.

For a rollback with nothing to put back (the environment's first deploy): removes
DIR/programs/NAME.conf and runs `supervisorctl update NAME`. Idempotent.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _supervisor as sv


def run() -> int:
    parser = argparse.ArgumentParser(description="remove a greeter program from supervisord")
    parser.add_argument("--supervisor", type=Path, required=True)
    parser.add_argument("--program", required=True)
    parser.add_argument("--wait", type=float, default=30)
    args = parser.parse_args()
    sv.require_running(args.supervisor)
    (args.supervisor / sv.PROGRAMS / f"{args.program}.conf").unlink(missing_ok=True)
    sv.ctl(args.supervisor, "update", args.program)
    if not sv.wait_for(lambda: sv.status(args.supervisor, args.program)[0] == "ABSENT", args.wait):
        raise sv.Failure(f"{args.program} is still {sv.status(args.supervisor, args.program)[0]}")
    print(f"{args.program}: removed")
    return 0


if __name__ == "__main__":
    sv.main_guard(run)
