"""`python supervisord.py DIR [--foreground]`: write DIR/supervisord.conf and start supervisord.

DIR gets the control socket (keep its path short: unix sockets allow ~100 bytes), logs and
`programs/`, where deploy.py writes one program per environment. Without --foreground
supervisord detaches; stop it with `supervisorctl -c DIR/supervisord.conf shutdown`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import _supervisor as sv


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--foreground", action="store_true", help="stay in the foreground (supervisord -n)")
    args = parser.parse_args()
    conf = sv.write_config(args.folder)
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    if args.foreground:
        argv.append("-n")
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    sv.main_guard(run)
