"""Health probe for relman: this release's migrations on a copy of the environment's database.

Run from a release folder: `python probe.py --db ENV_DIR/greeter.sqlite --checks 30`. It copies
the database (nothing there: an empty one), brings the copy to this release's schema (so during
a dark launch, before production is migrated, it rehearses exactly the migration go-live will
run), then runs `--checks` reads the greeter and greeter-worker make and prints one JSON object:
requests/errors/error_rate/latency_ms as relman's health reads them, and the schema version.
A migration that fails counts every check as an error: the verdict is `fail`, not `no_data`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from migrate import MigrationError, deploy, schema_version

HERE = Path(__file__).resolve().parent


def copy_of(db: Path, into: Path) -> Path:
    """A consistent copy of `db` (SQLite's backup API, safe while others write), or a new path."""
    target = into / "probe.sqlite"
    if db.is_file():
        with (
            contextlib.closing(
                sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            ) as source,
            contextlib.closing(sqlite3.connect(target)) as copy,
        ):
            source.backup(copy)
    return target


def check(conn: sqlite3.Connection, i: int, langs: list[str]) -> bool:
    """One read as the services make it: a greeting template, then the pending outbox."""
    row = conn.execute("SELECT template FROM greetings WHERE lang = ?", (langs[i % len(langs)],)).fetchone()
    if row is None or "{name}" not in row[0]:
        return False
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "outbox" in tables:
        conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True, help="the environment's database")
    parser.add_argument("--checks", type=int, default=30)
    args = parser.parse_args()
    version = (HERE / "VERSION").read_text().strip()
    result: dict[str, object] = {"version": version, "requests": args.checks, "samples": args.checks}
    with tempfile.TemporaryDirectory() as tmp:
        copy = copy_of(args.db, Path(tmp))
        try:
            result["migrations"] = deploy(copy, HERE)
        except MigrationError as exc:
            result |= {"errors": args.checks, "error_rate": 1.0, "latency_ms": 0.0, "problem": str(exc)}
            print(json.dumps(result), flush=True)
            return
        with contextlib.closing(sqlite3.connect(copy)) as conn:
            langs = [lang for (lang,) in conn.execute("SELECT lang FROM greetings ORDER BY lang")] or ["en"]
            errors, latencies = 0, []
            for i in range(args.checks):
                started = time.perf_counter()
                try:
                    ok = check(conn, i, langs)
                except sqlite3.Error:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok
            latencies.sort()
            result |= {
                "schema_version": schema_version(conn),
                "errors": errors,
                "error_rate": round(errors / args.checks, 4) if args.checks else 0.0,
                "latency_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else 0.0,
            }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
