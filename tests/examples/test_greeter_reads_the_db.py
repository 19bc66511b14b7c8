"""The greeter with greeter-db's database: greetings by language, 503 on a schema too old,
and the greeter alone (no database file) as before. Its own suites stay as they were."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.activities.greeter_support import EXAMPLES


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("greeter_app", EXAMPLES / "greeter" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


app = load_app()


def database(path: Path, rows: list[tuple[str, str]]) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE greetings (lang TEXT PRIMARY KEY, template TEXT NOT NULL)")
        conn.executemany("INSERT INTO greetings VALUES (?, ?)", rows)
    conn.close()
    return path


@pytest.fixture
def serve_on() -> Iterator[Callable[[Path | None], str]]:
    servers = []

    def start(db: Path | None) -> str:
        server, _ = app.serve(0, db=db)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_language_the_database_has(tmp_path: Path, serve_on: Callable[[Path | None], str]) -> None:
    base = serve_on(database(tmp_path / "g.sqlite", [("fr", "Bonjour, {name} !")]))
    assert get(f"{base}/greet?name=Ana&lang=fr") == (
        200,
        {"message": "Bonjour, Ana !", "version": app.load_version(), "variant": "stable"},
    )
    assert get(f"{base}/greet?name=Ana&lang=de")[1]["message"] == "Hello, Ana!"  # a language it lacks


def test_no_database_file_is_the_greeter_alone(
    tmp_path: Path, serve_on: Callable[[Path | None], str]
) -> None:
    missing = tmp_path / "missing.sqlite"
    base = serve_on(missing)
    assert get(f"{base}/greet?name=Ana&lang=fr")[1]["message"] == "Hello, Ana!"
    assert not missing.exists()  # reading never creates it
    assert app.template_for(None, "fr") is None


def test_a_schema_without_greetings_fails_the_request(
    tmp_path: Path, serve_on: Callable[[Path | None], str]
) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as conn:  # a database greeter-db's migrations never ran on
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    base = serve_on(db)
    status, body = get(f"{base}/greet?name=Ana")
    assert status == 503 and str(body["error"]).startswith(
        "greeter-db schema too old: no such table: greetings"
    )
    assert get(f"{base}/metrics")[1]["errors"] == 1


def test_braces_in_a_name_are_not_a_template() -> None:
    assert app.greeting("{name}{0}", template="Hi {name}") == "Hi {name}{0}"
    assert app.greeting("Ana", {"bug": "tests"}, template="Hi {name}") == "hello ana"  # the bug as before
