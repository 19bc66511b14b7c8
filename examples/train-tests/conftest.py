"""Fixtures of the train suite `combined`: the three components as staging holds them now.

`--envs-dir` is the catalog's `{envs_dir}` (every service's environments). The tests work on a
copy of staging's greeter-db database: staging's own file is never written.
"""

import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--envs-dir", required=True, type=Path, help="the catalog's {envs_dir}")


@pytest.fixture
def staging(request):
    """Service -> its staging folder (`<envs>/<service>/staging`)."""
    envs = request.config.getoption("--envs-dir")
    return {s: envs / s / "staging" for s in ("greeter", "greeter-db", "greeter-worker")}


@pytest.fixture
def database(staging, tmp_path):
    """A copy of greeter-db's staging database, as its last migration left it."""
    source = staging["greeter-db"] / "greeter.sqlite"
    assert source.is_file(), f"greeter-db is not deployed in staging ({source})"
    copy = tmp_path / "greeter.sqlite"
    with (
        contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
        contextlib.closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
    return copy


@pytest.fixture
def greeter(staging, database):
    """Staging's greeter release serving on an ephemeral port, reading the database copy."""
    release = (staging["greeter"] / "current").resolve()
    assert (release / "app.py").is_file(), f"greeter is not deployed in staging ({release})"
    sys.path.insert(0, str(release))
    try:
        from app import serve
    finally:
        sys.path.remove(str(release))
    server, _ = serve(0, root=release, db=database)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
