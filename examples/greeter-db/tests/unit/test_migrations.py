"""This release's migrations: they parse, apply to an empty database and undo cleanly."""

import sqlite3
from pathlib import Path

from migrate import applied, connect, deploy, read_migrations, statements, undeploy

RELEASE = Path(__file__).resolve().parents[2]


def tables(db):
    with sqlite3.connect(db) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    return names - {"schema_migrations", "release"}


def test_the_migrations_are_numbered_from_one():
    numbers = [m.number for m in read_migrations(RELEASE / "migrations")]
    assert numbers == list(range(1, len(numbers) + 1))


def test_they_apply_to_an_empty_database(tmp_path):
    db = tmp_path / "greeter.sqlite"
    done = deploy(db, RELEASE)
    assert len(done) == len(read_migrations(RELEASE / "migrations"))
    with connect(db) as conn:
        assert sorted(applied(conn)) == [m.number for m in read_migrations(RELEASE / "migrations")]
        templates = [t for (t,) in conn.execute("SELECT template FROM greetings")]
    assert templates and all("{name}" in t for t in templates)


def test_deploying_again_changes_nothing(tmp_path):
    db = tmp_path / "greeter.sqlite"
    deploy(db, RELEASE)
    assert deploy(db, RELEASE) == []


def test_undo_leaves_no_table_and_no_file(tmp_path):
    db = tmp_path / "greeter.sqlite"
    deploy(db, RELEASE)
    assert "greetings" in tables(db)
    undeploy(db)
    assert not db.exists()


def test_a_semicolon_in_a_string_does_not_split_a_statement():
    assert list(statements("INSERT INTO t VALUES ('a;b');\nSELECT 1;")) == [
        "INSERT INTO t VALUES ('a;b');",
        "SELECT 1;",
    ]
