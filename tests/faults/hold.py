"""`python hold.py DIR NAME AT -- CMD...`: run CMD, but hold its AT-th run until DIR/NAME.go exists.

A catalog command wrapped by this script lets a fault test stop a build, a test suite or a
probe in the middle and kill the worker there. Every run appends `start N PID` and, when CMD
ends, `done N RC` to DIR/NAME.runs, so the test counts how often the command really ran.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

HOLD_LIMIT = 300.0


def main() -> int:
    folder, name, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    assert sys.argv[4] == "--", "usage: hold.py DIR NAME AT -- CMD..."
    command = sys.argv[5:]
    runs = folder / f"{name}.runs"
    with runs.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = sum(1 for line in f if line.startswith("start ")) + 1
        f.write(f"start {n} {os.getpid()}\n")
    if n == at:
        (folder / f"{name}.held").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + HOLD_LIMIT
        while not (folder / f"{name}.go").exists():
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.05)
    code = subprocess.call(command)
    with runs.open("a") as f:
        f.write(f"done {n} {code}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
