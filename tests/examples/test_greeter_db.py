"""greeter-db's migration tool as relman runs it (deploy, rollback = deploy of the older
release, current, undeploy), on real SQLite files, and its refusals."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.activities.greeter_support import EXAMPLES

SOURCE = EXAMPLES / "greeter-db"


def load_migrate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("greeter_db_migrate", SOURCE / "migrate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


migrate = load_migrate()


def run(*args: str, cwd: Path = SOURCE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def build(tmp: Path, version: str) -> Path:
    out = tmp / "packages" / version
    done = run("build.py", "--version", version, "--commit", "abc1234", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return names - {"schema_migrations", "release"}


def test_each_release_ships_the_migrations_of_its_version(tmp_path: Path) -> None:
    shipped = {
        v: sorted(p.name for p in (build(tmp_path, v) / "migrations").iterdir()) for v in ("1.0.0", "2.0.0")
    }
    assert shipped == {
        "1.0.0": ["001_greetings.sql"],
        "2.0.0": ["001_greetings.sql", "002_languages.sql", "003_outbox.sql"],
    }
    assert "004_greeting_stats.sql" in {p.name for p in (build(tmp_path, "2.2.0") / "migrations").iterdir()}
    refused = run("build.py", "--version", "0.9.0", "--out", str(tmp_path / "old"))
    assert refused.returncode == 1 and "ships no migration" in refused.stderr


def test_up_down_and_back_up_through_the_commands(tmp_path: Path) -> None:
    v1, v2 = build(tmp_path, "1.0.0"), build(tmp_path, "2.0.0")
    db = tmp_path / "env" / "greeter.sqlite"

    def current() -> str:
        done = run("migrate.py", "current", "--db", str(db))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert current() == "" and not db.exists()  # asking never creates the database
    assert run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(v1)).stdout.strip() == (
        "applied 001_greetings"
    )
    assert current() == "1.0.0" and tables(db) == {"greetings"}
    up = run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(v2))
    assert up.stdout.strip() == "applied 002_languages; applied 003_outbox"
    assert current() == "2.0.0" and tables(db) == {"greetings", "outbox"}
    # A retry after a crash: the same version again changes nothing.
    assert run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(v2)).stdout.strip() == (
        "schema unchanged"
    )
    # Rollback = deploy of 1.0.0, whose package lacks 002 and 003: the database's copies undo them.
    down = run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(v1))
    assert down.stdout.strip() == "undid 003_outbox; undid 002_languages"
    assert current() == "1.0.0" and tables(db) == {"greetings"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT lang FROM greetings").fetchall() == [("en",)]
    conn.close()
    assert run("migrate.py", "undeploy", "--db", str(db)).stdout.strip() == "undid 001_greetings"
    assert current() == "" and not db.exists()


def test_a_failing_migration_leaves_the_previous_schema(tmp_path: Path) -> None:
    db = tmp_path / "greeter.sqlite"
    assert (
        run(
            "migrate.py", "deploy", "--db", str(db), "--release-dir", str(build(tmp_path, "2.0.0"))
        ).returncode
        == 0
    )
    failed = run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(build(tmp_path, "2.2.0")))
    assert failed.returncode == 1
    assert failed.stderr.strip() == "greeter-db: applying 004_greeting_stats: no such table: greeting_stats"
    assert run("migrate.py", "current", "--db", str(db)).stdout.strip() == "2.0.0"
    with sqlite3.connect(db) as conn:
        assert [n for (n,) in conn.execute("SELECT number FROM schema_migrations")] == [1, 2, 3]
    conn.close()


def test_the_probe_rehearses_on_a_copy(tmp_path: Path) -> None:
    v1, v2 = build(tmp_path, "1.0.0"), build(tmp_path, "2.0.0")
    db = tmp_path / "env" / "greeter.sqlite"
    assert run("migrate.py", "deploy", "--db", str(db), "--release-dir", str(v1)).returncode == 0
    done = run("probe.py", "--db", str(db), "--checks", "25", cwd=v2)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert metrics["schema_version"] == 3 and metrics["migrations"] == [
        "applied 002_languages",
        "applied 003_outbox",
    ]
    assert (metrics["requests"], metrics["errors"], metrics["error_rate"]) == (25, 0, 0.0)
    assert tables(db) == {"greetings"}  # production's own database is not migrated by a probe
    nothing = json.loads(run("probe.py", "--db", str(tmp_path / "none.sqlite"), cwd=v2).stdout)
    assert nothing["errors"] == 0 and not (tmp_path / "none.sqlite").exists()


def test_bad_migration_files_are_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_a.sql").write_text("-- since: 1.0.0\n-- up\nCREATE TABLE a (x);\n")
    with pytest.raises(
        migrate.MigrationError, match=r"^001_a.sql: needs `-- since: X.Y.Z`, an `-- up` and a"
    ):
        migrate.read_migrations(folder)
    (folder / "001_a.sql").rename(folder / "1_a.sql")
    with pytest.raises(migrate.MigrationError, match=r"^1_a\.sql: a migration is named NNN_name\.sql$"):
        migrate.read_migrations(folder)
    with pytest.raises(migrate.MigrationError, match="unfinished statement"):
        list(migrate.statements("CREATE TABLE a (x)"))


def test_a_release_cannot_drop_a_middle_migration(tmp_path: Path) -> None:
    db = tmp_path / "greeter.sqlite"
    migrate.deploy(db, build(tmp_path, "2.0.0"))
    gap = build(tmp_path, "2.0.1")
    (gap / "migrations" / "002_languages.sql").unlink()
    with pytest.raises(
        migrate.MigrationError, match=r"release 2\.0\.1 lacks migration 002 but keeps later ones"
    ):
        migrate.deploy(db, gap)
    assert migrate.current(db) == "2.0.0"
