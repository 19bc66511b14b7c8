"""`python deploy.py --supervisor DIR --program NAME --port P --version V --release-dir D [-- ARGS]`

Make the greeter release in D (its VERSION must say V) run as supervisor program NAME on
127.0.0.1:P: write the program's section into DIR/programs/NAME.conf, `supervisorctl update
NAME` (restarts it only if the section changed), start it if it is not running, then wait
until the process on P reports V in GET /metrics. ARGS go to app.py.

Idempotent: deploying the version that already runs changes nothing and succeeds. A rollback
is a deploy of the version to restore. Exit status 0 once V serves, 1 with one line on
stderr otherwise (supervisord not answering, V not serving within --wait seconds).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import _supervisor as sv


def section(args: argparse.Namespace, folder: Path) -> str:
    app_args = [a for a in args.app_args if a != "--"]
    command = shlex.join(
        [sys.executable, str(args.release_dir / "app.py"), "--port", str(args.port), *app_args]
    )

    def value(text: str) -> str:
        return text.replace("%", "%%")  # supervisor expands %(name)s in values

    return "\n".join(
        [
            f"; written by deploy.py: {args.program} runs greeter {args.version}",
            f"[program:{args.program}]",
            f"command={value(command)}",
            f"directory={value(str(args.release_dir))}",
            "autostart=true",
            "autorestart=true",
            # Readiness is the HTTP check below, not a time alive.
            "startsecs=0",
            "stopsignal=TERM",
            "stopwaitsecs=10",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={value(str(folder.resolve() / 'logs' / (args.program + '.log')))}",
            "stdout_logfile_maxbytes=1MB",
            "stdout_logfile_backups=1",
            'environment=PYTHONDONTWRITEBYTECODE="1",PYTHONUNBUFFERED="1"',
            "",
        ]
    )


def run() -> int:
    parser = argparse.ArgumentParser(description="deploy a greeter version under supervisord")
    parser.add_argument("--supervisor", type=Path, required=True, help="the supervisord directory")
    parser.add_argument("--program", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--release-dir", type=Path, required=True)
    parser.add_argument("--wait", type=float, default=30, help="seconds for the version to answer")
    parser.add_argument("app_args", nargs=argparse.REMAINDER, help="after --: arguments for app.py")
    args = parser.parse_args()
    folder: Path = args.supervisor
    args.release_dir = args.release_dir.resolve()
    stamped = (
        (args.release_dir / "VERSION").read_text().strip()
        if (args.release_dir / "VERSION").is_file()
        else None
    )
    if stamped != args.version:
        raise sv.Failure(f"{args.release_dir} holds version {stamped or 'none'}, not {args.version}")
    sv.require_running(folder)
    sv.write_atomic(folder / sv.PROGRAMS / f"{args.program}.conf", section(args, folder))
    answer = sv.ctl(folder, "update", args.program)
    if "ERROR" in answer.stdout + answer.stderr:
        raise sv.Failure(
            f"supervisorctl update {args.program}: {(answer.stdout + answer.stderr).strip()[:300]}"
        )
    state, _ = sv.status(folder, args.program)
    if state not in ("RUNNING", "STARTING"):
        sv.ctl(folder, "start", args.program)
    elif sv.served_version(args.port) not in (None, args.version):
        # Same section, another version answering: a process from before, restart it.
        sv.ctl(folder, "restart", args.program)
    if not sv.wait_for(lambda: sv.served_version(args.port) == args.version, args.wait):
        state, _ = sv.status(folder, args.program)
        serves = sv.served_version(args.port) or "nothing"
        raise sv.Failure(
            f"{args.program} is {state} and port {args.port} serves {serves}, not {args.version}, "
            f"after {args.wait:g}s (log: {folder / 'logs' / args.program}.log)"
        )
    state, pid = sv.status(folder, args.program)
    print(f"{args.program}: greeter {args.version} {state} pid {pid} on port {args.port}")
    return 0


if __name__ == "__main__":
    sv.main_guard(run)
