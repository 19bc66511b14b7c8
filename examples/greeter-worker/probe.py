"""Health probe for relman: this worker release sends greetings through the deployed greeter.

Run from a release folder:

    python probe.py --greeter-release ENVS/greeter/production/current \
                    --db ENVS/greeter-db/production/greeter.sqlite --requests 30

It copies greeter-db's database (the environment's own is never written), queues `--requests`
greetings in the copy's outbox (every other name has a space: people's names do), starts the
greeter release that is deployed in the same environment on an ephemeral port, runs this
worker over the outbox and prints the run's metrics as one JSON object. A sent message must
carry the name, or it counts as an error. No greeter or no greeter-db deployed there exits 1
with a one-line reason: the worker cannot run without them (relman's verdict: no data).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

from worker import run

NAMES = ("Ana", "Ana Maria", "Bo", "Jean Luc")


def copy_of(db: Path, target: Path) -> Path:
    with (
        contextlib.closing(
            sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        ) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    return target


def queue(db: Path, count: int) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        langs = [lang for (lang,) in conn.execute("SELECT lang FROM greetings ORDER BY lang")] or ["en"]
        conn.executemany(
            "INSERT INTO outbox (name, lang) VALUES (?, ?)",
            [(f"{NAMES[i % len(NAMES)]}{i}", langs[i % len(langs)]) for i in range(count)],
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--greeter-release", type=Path, required=True, help="the deployed greeter's folder")
    parser.add_argument("--db", type=Path, required=True, help="greeter-db's database in that environment")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    greeter_dir = args.greeter_release.resolve()
    if not (greeter_dir / "app.py").is_file():
        sys.exit(f"greeter-worker probe: no greeter deployed at {args.greeter_release}")
    if not args.db.is_file():
        sys.exit(f"greeter-worker probe: no greeter-db database at {args.db}")
    # The deployed greeter's own code, in this process: its HTTP API is what the worker calls.
    sys.path.insert(0, str(greeter_dir))
    from app import serve

    with tempfile.TemporaryDirectory() as tmp:
        db = copy_of(args.db, Path(tmp) / "greeter.sqlite")
        try:
            queue(db, args.requests)
        except sqlite3.Error as exc:
            sys.exit(f"greeter-worker probe: greeter-db at {args.db} has no outbox this worker needs ({exc})")
        server, greeter = serve(0, root=greeter_dir, db=db)
        try:
            result = run(db, f"http://127.0.0.1:{server.server_address[1]}", batch=args.requests)
        finally:
            server.shutdown()
        with contextlib.closing(sqlite3.connect(db)) as conn:
            wrong = conn.execute(
                "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL AND instr(message, name) = 0"
            ).fetchone()[0]
    if wrong:
        result["errors"] += wrong
        result["error_rate"] = round(result["errors"] / result["requests"], 4)
    print(json.dumps({**result, "greeter_version": greeter.version}), flush=True)


if __name__ == "__main__":
    main()
