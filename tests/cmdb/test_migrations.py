"""CMDB schema migrations: a database the previous relman created, with rows in it, is
upgraded by `relman cmdb upgrade` and loses nothing; older databases are refused; the
migrations' head equals models.py. On real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from relman.cmdb import CmdbStore, migrate
from relman.cmdb.migrate import CmdbSchemaOutdated
from relman.cmdb.models import metadata
from tests.cmdb.fixtures.fill_old_cmdb import snapshot
from tests.cmdb.helpers import empty_database

REPO = Path(__file__).resolve().parents[2]
BEFORE_MIGRATIONS = "ba668503730531458c5a8fc407fd2b32e2e35c25"
"""The last commit whose CMDB schema came from create_all (revision 0001 is its schema)."""
FILL = Path(__file__).parent / "fixtures" / "fill_old_cmdb.py"

# Runs FILL on the old code: the editable install's finder would import today's relman.
_ON_OLD_CODE = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, sys.argv[1])
import relman
assert relman.__file__.startswith(sys.argv[1]), relman.__file__
sys.argv = [sys.argv[2], sys.argv[3]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """relman (and the test helpers) as of the commit before migrations."""
    paths = ["relman", "tests/__init__.py", "tests/cmdb/__init__.py", "tests/cmdb/helpers.py"]
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", BEFORE_MIGRATIONS, *paths],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"commit {BEFORE_MIGRATIONS[:8]} is not in this clone (shallow?): {exc}")
    root = tmp_path_factory.mktemp("old_relman")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: a SQLite file, or a new PostgreSQL database."""
    with empty_database(request, tmp_path, request.param, "t_mig") as url:
        yield url


def relman_cli(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"RELMAN_CMDB_URL": url, "RELMAN_DATA_DIR": str(cwd / "data")}
    cli = shutil.which("relman", path=str(Path(sys.executable).parent)) or "relman"
    return subprocess.run([cli, "cmdb", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.current_revision(conn)
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    """What alembic autogenerate would change to make the database equal models.py."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def matches(old: object, new: object) -> bool:
    """`new` holds everything `old` did (records may have gained fields since)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and matches(v, new[k]) for k, v in old.items())
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(matches(o, n) for o, n in zip(old, new, strict=True))
    return old == new


def test_upgrade_from_the_previous_schema_keeps_every_row(
    old_code: Path, db_url: str, tmp_path: Path
) -> None:
    filled = subprocess.run(
        [sys.executable, "-c", _ON_OLD_CODE, str(old_code), str(FILL), db_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert filled.returncode == 0, filled.stderr
    before = json.loads(filled.stdout)
    assert before["verify_audit"]["ok"] and before["counts"]["audit_log"] >= 10
    assert all(before["counts"].values()), before["counts"]
    assert revision(db_url) is None  # created by create_all: no alembic_version

    upgraded = relman_cli(db_url, tmp_path, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"from schema revision none to {migrate.head()}" in upgraded.stdout
    assert revision(db_url) == migrate.head()

    again = relman_cli(db_url, tmp_path, "upgrade")
    assert again.returncode == 0, again.stderr
    assert f"is at schema revision {migrate.head()}: nothing to upgrade" in again.stdout

    store = CmdbStore(db_url)
    try:
        after = snapshot(store)
        assert matches(before, after), json.dumps({"before": before, "after": after}, indent=1)
        ids = [w["id"] for w in after["windows"]]  # type: ignore[index]
        assert len(set(ids)) == len(before["windows"]) and all(ids), ids  # migration 0002 gave them ids
        assert store.verify_audit().ok
        # Still writable, and the chain continues across the upgrade.
        assert store.append_audit("after-upgrade/1", actor="ops", action="note", subject="checkout")
        verification = store.verify_audit()
        assert verification.ok and verification.rows == before["verify_audit"]["rows"] + 1
    finally:
        store.close()
    assert schema_differences(db_url) == []

    verified = relman_cli(db_url, tmp_path, "verify-audit")
    assert verified.returncode == 0 and "audit log intact" in verified.stdout, (
        verified.stdout + verified.stderr
    )


def test_an_empty_database_is_created_at_head_equal_to_the_models(db_url: str) -> None:
    store = CmdbStore(db_url)
    try:
        assert store.count("change") == 0
        assert store.schema_revision() == migrate.head()
    finally:
        store.close()
    assert schema_differences(db_url) == []


def test_a_database_of_an_unknown_revision_is_refused(db_url: str) -> None:
    CmdbStore(db_url).close()
    store = CmdbStore(db_url)
    try:
        store.count("change")
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
        refused = CmdbStore(db_url)
        with pytest.raises(CmdbSchemaOutdated, match="unknown to this relman") as caught:
            refused.count("change")
        assert "\n" not in str(caught.value)
        refused.close()
    finally:
        store.close()


def next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This relman with one more migration (a column added), as the next relman will be."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_probe.py").write_text(
        '"""probe"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "9999"\ndown_revision = "{migrate.head()}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.add_column("deployment_window", sa.Column("probe", sa.String(16), nullable=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    op.drop_column("deployment_window", "probe")\n'
    )
    monkeypatch.setattr(migrate, "MIGRATIONS", scripts)
    return "9999"


def test_an_older_revision_is_refused_in_one_line_until_upgraded(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at_head = CmdbStore(db_url)
    at_head.count("change")
    at_head.close()
    current = migrate.head()
    needed = next_revision(tmp_path, monkeypatch)

    store = CmdbStore(db_url)
    try:
        with pytest.raises(CmdbSchemaOutdated) as caught:
            store.list_changes()
        shown = make_url(db_url).render_as_string(hide_password=True)
        assert str(caught.value) == (
            f"the CMDB at {shown} is at schema revision {current}, this relman needs {needed}: "
            "run `relman cmdb upgrade` (back it up first)"
        )
        assert store.upgrade() == (current, needed)
        assert store.upgrade() == (needed, needed)
        assert store.list_changes() == []
    finally:
        store.close()
    assert CmdbStore(db_url).schema_revision() == needed


def test_the_cli_names_the_upgrade_when_refused(db_url: str, tmp_path: Path) -> None:
    store = CmdbStore(db_url)
    try:
        store.count("change")
        with store.engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('0000')"))
    finally:
        store.close()
    shown = relman_cli(db_url, tmp_path, "changes")
    assert shown.returncode == 1
    assert "schema revision 0000" in shown.stderr + shown.stdout


def test_a_0002_database_is_refused_then_upgraded_to_trains(db_url: str, tmp_path: Path) -> None:
    """Revision 0003 (release trains) on a database the previous relman left at 0002, with a
    change in it: refused in one line until `relman cmdb upgrade`, then the change is a release
    and trains can be written."""
    from alembic import command
    from sqlalchemy import column, table

    from relman.cmdb.models import UtcDateTime
    from relman.contracts import CloseCode, Outcome, Risk
    from relman.contracts.train import ComponentRecord, TrainCloseInput
    from tests.cmdb.train_support import TRAIN_ID, train_request

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.config(conn), "0002")
            # The change table as 0002 has it (no `kind`), written as that relman wrote it.
            at = UtcDateTime()
            old_change = table(
                "change",
                *(column(c) for c in ("release_id", "service", "version", "change_type", "risk", "status")),
                *(column(c) for c in ("requested_by", "title", "reason")),
                column("requested_at", at),
                column("updated_at", at),
                column("production_at", at),
            )
            t0 = datetime(2025, 3, 3, 9, tzinfo=UTC)
            conn.execute(
                old_change.insert().values(
                    release_id="release-api-2.0.0", service="api", version="2.0.0", change_type="normal",
                    risk="low", status="closed", requested_by="alice", title="api", reason="",
                    requested_at=t0, updated_at=t0, production_at=t0 + timedelta(hours=1),
                )
            )  # fmt: skip
    finally:
        engine.dispose()
    assert revision(db_url) == "0002"

    refused = CmdbStore(db_url)
    with pytest.raises(CmdbSchemaOutdated) as caught:
        refused.list_changes()
    assert "is at schema revision 0002, this relman needs 0003" in str(caught.value)
    assert "\n" not in str(caught.value)
    refused.close()

    upgraded = relman_cli(db_url, tmp_path, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "from schema revision 0002 to 0003" in upgraded.stdout
    assert schema_differences(db_url) == []

    store = CmdbStore(db_url)
    try:
        [old] = store.list_changes()
        assert (old.release_id, old.kind, old.service) == ("release-api-2.0.0", "release", "api")
        assert store.dora(t0, t0 + timedelta(days=1)).deployments == 1
        assert store.close_train(
            TrainCloseInput(
                release_id=TRAIN_ID,
                step="close",
                request=train_request(),
                risk=Risk.LOW,
                outcome=Outcome.COMPLETED,
                close_code=CloseCode.SUCCESSFUL,
                components=[ComponentRecord(service="api", version="2.1.0", deployed=True)],
            )
        )
        assert [c.kind for c in store.list_changes(service="api")] == ["release", "train"]
    finally:
        store.close()
