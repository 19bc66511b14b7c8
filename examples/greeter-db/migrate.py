"""greeter-db's migration tool: bring a SQLite database to a release's schema, up or down.

python migrate.py deploy --db FILE --release-dir DIR   # DIR's migrations applied, newer ones undone
python migrate.py current --db FILE                    # the release applied last; nothing if none
python migrate.py undeploy --db FILE                   # every migration undone, the file removed

relman runs these as greeter-db's `type: command` environment (deploy, rollback = deploy of the
version to put back, current, undeploy). A migration is `migrations/NNN_name.sql` with an
`-- up` and a `-- down` part. The database keeps each applied migration's down part: going
back to an older release, whose package lacks the newer migrations, still undoes them. Each
migration runs in one transaction with its bookkeeping, so a crash leaves the database at a
migration boundary and deploying again carries on (deploying the version that is there
changes nothing). Without any migration left the file is removed: no database is what the
greeter reads as "greeter-db is not there", and it then greets alone.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    number INTEGER PRIMARY KEY, name TEXT NOT NULL, down_sql TEXT NOT NULL, applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS release (id INTEGER PRIMARY KEY CHECK (id = 1), version TEXT NOT NULL);
"""


class MigrationError(Exception):
    """A migration cannot be read or applied; the message is one line."""


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    since: tuple[int, ...]
    """The first greeter-db release that ships it (the build leaves it out of older ones)."""
    up: str
    down: str


def version_key(version: str) -> tuple[int, ...]:
    """`2.10.0` -> (2, 10, 0): releases compare by number, not as text."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0]))


def parse(path: Path) -> Migration:
    """One migration file: `-- since: X.Y.Z`, then an `-- up` and a `-- down` part."""
    match = NAME.match(path.name)
    if not match:
        raise MigrationError(f"{path.name}: a migration is named NNN_name.sql")
    since, part = "", None
    parts: dict[str, list[str]] = {"up": [], "down": []}
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = line.strip().lower()
        if marker.startswith("-- since:"):
            since = marker.removeprefix("-- since:").strip()
        elif marker in ("-- up", "-- down"):
            part = marker.removeprefix("-- ")
        elif part is not None:
            parts[part].append(line)
    up, down = "\n".join(parts["up"]).strip(), "\n".join(parts["down"]).strip()
    if not since or not up or not down:
        raise MigrationError(f"{path.name}: needs `-- since: X.Y.Z`, an `-- up` and a `-- down` part")
    return Migration(int(match.group(1)), match.group(2), version_key(since), up, down)


def read_migrations(folder: Path) -> list[Migration]:
    migrations = sorted((parse(p) for p in folder.glob("*.sql")), key=lambda m: m.number)
    numbers = [m.number for m in migrations]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"{folder}: two migrations share a number")
    return migrations


def statements(sql: str) -> Iterator[str]:
    """The statements of a script, split where SQLite says one is complete (not at every `;`,
    which may sit inside a string)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip() and not buffer.strip().startswith("--"):
        raise MigrationError(f"unfinished statement: {buffer.strip()[:60]!r}")


@contextlib.contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    db.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are ours (BEGIN/COMMIT), DDL included.
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.executescript(BOOKKEEPING)
        yield conn
    finally:
        conn.close()


def _in_transaction(conn: sqlite3.Connection, sql: str, bookkeeping: tuple[str, tuple[object, ...]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements(sql):
            conn.execute(statement)
        conn.execute(*bookkeeping)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def applied(conn: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    """Applied migrations: number -> (name, down part)."""
    rows = conn.execute("SELECT number, name, down_sql FROM schema_migrations ORDER BY number")
    return {number: (name, down) for number, name, down in rows}


def schema_version(conn: sqlite3.Connection) -> int:
    return max(applied(conn), default=0)


def deploy(db: Path, release_dir: Path) -> list[str]:
    """Bring `db` to the schema of the release in `release_dir`; what was done, in order."""
    version = (release_dir / "VERSION").read_text().strip()
    wanted = read_migrations(release_dir / "migrations")
    done: list[str] = []
    with connect(db) as conn:
        have = applied(conn)
        keep = {m.number for m in wanted}
        extra = sorted((n for n in have if n not in keep), reverse=True)
        if extra and any(n > min(extra) for n in keep & set(have)):
            raise MigrationError(
                f"release {version} lacks migration {min(extra):03d} but keeps later ones: cannot undo it"
            )
        for number in extra:  # a rollback: the newer migrations' own down parts, newest first
            name, down = have[number]
            try:
                _in_transaction(conn, down, ("DELETE FROM schema_migrations WHERE number = ?", (number,)))
            except sqlite3.Error as exc:
                raise MigrationError(f"undoing {number:03d}_{name}: {exc}") from None
            done.append(f"undid {number:03d}_{name}")
        for migration in wanted:
            if migration.number in have:
                continue
            row = (migration.number, migration.name, migration.down, datetime.now(UTC).isoformat())
            try:
                _in_transaction(
                    conn, migration.up, ("INSERT INTO schema_migrations VALUES (?, ?, ?, ?)", row)
                )
            except sqlite3.Error as exc:
                raise MigrationError(f"applying {migration.number:03d}_{migration.name}: {exc}") from None
            done.append(f"applied {migration.number:03d}_{migration.name}")
        conn.execute("INSERT OR REPLACE INTO release (id, version) VALUES (1, ?)", (version,))
    return done


def current(db: Path) -> str | None:
    """The release deployed last; None without a database (never creates one)."""
    if not db.is_file():
        return None
    with contextlib.closing(
        sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    ) as conn:
        try:
            row = conn.execute("SELECT version FROM release WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None  # not a database this tool made
    return str(row[0]) if row else None


def undeploy(db: Path) -> list[str]:
    """Undo every migration, newest first, then remove the database file."""
    if not db.is_file():
        return []
    done = []
    with connect(db) as conn:
        for number, (name, down) in sorted(applied(conn).items(), reverse=True):
            try:
                _in_transaction(conn, down, ("DELETE FROM schema_migrations WHERE number = ?", (number,)))
            except sqlite3.Error as exc:
                raise MigrationError(f"undoing {number:03d}_{name}: {exc}") from None
            done.append(f"undid {number:03d}_{name}")
    for leftover in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
        leftover.unlink(missing_ok=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="greeter-db migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("deploy", "current", "undeploy"):
        command = sub.add_parser(name)
        command.add_argument("--db", type=Path, required=True)
        if name == "deploy":
            command.add_argument("--release-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "current":
            version = current(args.db)
            if version:
                print(version)
            return 0
        done = deploy(args.db, args.release_dir) if args.command == "deploy" else undeploy(args.db)
    except (MigrationError, OSError, sqlite3.Error) as exc:
        print(f"greeter-db: {exc}", file=sys.stderr)
        return 1
    print("; ".join(done) or "schema unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
