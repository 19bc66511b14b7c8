"""Wires the real adapters into activity objects; the worker registers what this returns."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from relman.activities.build import BuildActivities
from relman.activities.environment import EnvironmentActivities
from relman.activities.exposure import ExposureActivities
from relman.activities.health import HealthActivities
from relman.activities.notify import NotifyActivities
from relman.activities.requests import RequestActivities
from relman.activities.testing import TestActivities
from relman.catalog import Catalog, CatalogError, load_catalog
from relman.errors import ConfigError
from relman.identity.keys import WORKER, KeyError_, Signer, key_path, read_private

log = structlog.get_logger(__name__)


def sync_catalog_to_cmdb(catalog: Catalog, store: Any) -> int:
    """Upsert every catalog CI and relationship into the CMDB; returns how many it synced.

    Keys carry a hash of the declaration, so an unchanged catalog writes nothing and an
    edited one writes once.
    """
    from relman.cmdb.records import CiSpec as CmdbCi

    def key(kind: str, detail: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()[:16]
        return f"catalog/{kind}/{digest}"

    cis = [
        CmdbCi(
            name=spec.ci_name or name,
            ci_class=spec.ci_class,
            description=spec.description[:1000],
            owner=spec.owner,
            criticality=spec.criticality,
        )
        for name, spec in catalog.services.items()
    ]
    cis += [
        CmdbCi(
            name=ci.name,
            ci_class=ci.ci_class,
            description=ci.description[:1000],
            owner=ci.owner,
            criticality=ci.criticality,
        )
        for ci in catalog.configuration_items
    ]
    writes = 0
    for ci in cis:
        store.upsert_ci(ci, actor="catalog", idempotency_key=key("ci", ci.model_dump(mode="json")))
        writes += 1
    for name, spec in catalog.services.items():
        for rel in spec.relationships:
            edge = {"parent": spec.ci_name or name, "type": rel.type, "child": rel.target}
            if store.add_relationship(
                edge["parent"], rel.target, rel.type, actor="catalog", idempotency_key=key("rel", edge)
            ):
                writes += 1
    return writes


def create_activities(
    catalog_path: Path,
    data_dir: Path,
    cmdb_url: str,
    webhook_url: str | None = None,
    evidence_key: Path | None = None,
    evidence_passphrase: bytes | None = None,
) -> list[Callable[..., Any]]:
    """Every activity of relman bound to its real adapter, ready for `Worker(activities=...)`.

    Build and test output lives under `data_dir/work`; the catalog's `{data_dir}` paths
    (environments) resolve against `data_dir`. The catalog's CIs and relationships are
    synced into the CMDB here (a failure is logged: the CMDB activities retry later).

    `evidence_key` (default `data_dir/keys/relman-worker.key`) signs the release evidence; it
    must be one the catalog declares under `evidence:`, or nobody could verify what the
    worker signs. It is read after the catalog, so a bad catalog is reported first.
    """
    from relman.activities.cmdb import CmdbActivities
    from relman.activities.evidence import EvidenceActivities
    from relman.cmdb.store import CmdbSchemaOutdated, CmdbStore

    data_dir = Path(data_dir)
    catalog = load_catalog(catalog_path, data_dir=data_dir)
    if problems := catalog.secret_problems(os.environ):
        raise CatalogError(f"{Path(catalog_path).name}: {'; '.join(problems)}")
    signer = _evidence_signer(evidence_key or key_path(data_dir / "keys", WORKER), evidence_passphrase)
    declared = catalog.evidence.public_keys
    if declared and signer.public not in declared:
        raise CatalogError(
            f"{Path(catalog_path).name}: evidence: the worker's evidence key {signer.key_id} is not "
            "declared there; add its public key (`relman keys show --worker`)"
        )
    work_root = data_dir / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    store = CmdbStore(cmdb_url)
    try:
        writes = sync_catalog_to_cmdb(catalog, store)
        log.info("catalog.synced", services=len(catalog.services), writes=writes)
    except CmdbSchemaOutdated as exc:
        # Not a passing outage: every release would retry against it. Say so before starting.
        store.close()
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # the worker still starts; the CMDB may come back later
        log.warning("catalog.sync_failed", error=f"{type(exc).__name__}: {exc}")

    requests = RequestActivities(catalog)
    build = BuildActivities(catalog, work_root)
    tests = TestActivities(catalog, work_root)
    envs = EnvironmentActivities(catalog)
    exposure = ExposureActivities(catalog)
    health = HealthActivities(catalog)
    notify = NotifyActivities(webhook_url)
    cmdb = CmdbActivities(store)
    evidence = EvidenceActivities(store, signer)
    return [
        requests.validate_request,
        requests.validate_train,
        build.build_package,
        tests.run_tests,
        tests.run_train_tests,
        envs.deploy,
        envs.rollback,
        exposure.set_exposure,
        health.check_health,
        notify.notify,
        *cmdb.all(),
        *evidence.all(),
    ]


def _evidence_signer(path: Path, passphrase: bytes | None) -> Signer:
    if not path.exists():
        raise CatalogError(f"no evidence key at {path}; create it with `relman keys init --worker`")
    try:
        return read_private(path, WORKER, passphrase)
    except KeyError_ as exc:
        raise CatalogError(f"evidence key: {exc}") from None
