"""The worker's activity list, and the catalog synced into a real (SQLite) CMDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio import activity

from relman.activities.registry import create_activities, sync_catalog_to_cmdb
from relman.cmdb.store import CmdbStore
from relman.contracts import Activity
from relman.errors import ConfigError

from .greeter_support import EXAMPLE_CATALOG, example_catalog, example_keys


def test_every_activity_is_registered_and_the_catalog_synced(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cmdb.db'}"
    example_keys(tmp_path / "data")
    acts = create_activities(EXAMPLE_CATALOG, tmp_path / "data", url)
    names = set()
    for fn in acts:
        defn = activity._Definition.from_callable(fn)
        assert defn is not None
        names.add(defn.name)
    assert names == {a.value for a in Activity}

    store = CmdbStore(url)
    greeter = store.get_ci("greeter")
    assert greeter is not None and greeter.ci_class == "application"
    assert store.get_ci("local-host") is not None
    assert store.get_ci("greeter-db") is not None and store.get_ci("greeter-db").ci_class == "database"
    rels = store.relationships("greeter")  # both directions: greeter-worker depends on it
    assert [(r.parent, r.type, r.child) for r in rels] == [
        ("greeter", "depends_on", "greeter-db"),
        ("greeter", "runs_on", "local-host"),
        ("greeter-worker", "depends_on", "greeter"),
    ]

    # Syncing again (a worker restart) writes nothing new: the 4 CIs are counted, no relationship.
    assert sync_catalog_to_cmdb(example_catalog(tmp_path / "data"), store) == 4
    assert len(store.relationships("greeter")) == 3 and len(store.list_cis()) == 4


def test_the_worker_refuses_a_cmdb_at_another_schema_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cmdb.db'}"
    example_keys(tmp_path / "data")
    store = CmdbStore(url)
    store.count("change")
    with store.engine.begin() as conn:  # as a database an older relman left
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    store.close()
    with pytest.raises(ConfigError) as refused:
        create_activities(EXAMPLE_CATALOG, tmp_path / "data", url)
    said = str(refused.value)
    assert "schema revision 0001" in said and "relman cmdb upgrade" in said and "\n" not in said
