"""`python current.py --supervisor DIR --program NAME --port P`: print the version that runs.

Asks supervisord for the program's state and, if it runs, the process itself (GET /metrics
on P). Prints the version alone, or nothing when no process of NAME runs (absent, stopped,
crashed). Exit status 1 (one line on stderr) when it cannot tell: supervisord does not
answer, or the program runs but nothing answers on P within --wait seconds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _supervisor as sv


def run() -> int:
    parser = argparse.ArgumentParser(description="print the greeter version a supervisor program runs")
    parser.add_argument("--supervisor", type=Path, required=True)
    parser.add_argument("--program", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait", type=float, default=5)
    args = parser.parse_args()
    sv.require_running(args.supervisor)
    state, pid = sv.status(args.supervisor, args.program)
    if state in ("ABSENT", "STOPPED", "EXITED", "FATAL", "BACKOFF"):
        return 0
    if state not in ("RUNNING", "STARTING"):
        raise sv.Failure(f"{args.program} is {state}; ask again once it settles")
    versions: list[str] = []

    def answered() -> bool:
        version = sv.served_version(args.port)
        if version is not None:
            versions.append(version)
        return version is not None

    if not sv.wait_for(answered, args.wait):
        raise sv.Failure(f"{args.program} is {state} (pid {pid}) but nothing answers on port {args.port}")
    print(versions[-1])
    return 0


if __name__ == "__main__":
    sv.main_guard(run)
