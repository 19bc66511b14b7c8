"""Exposure activity: a flags file per environment saying who sees the new version.

`<env base>/flags.json` holds, per service, the version under dark launch, the percentage of
users exposed and an allow-list. Membership is sticky: a user's bucket is a hash of a
salt (the service) and their key, so a user inside 1% stays inside at 5% and 25%. Setting
0% with an empty allow-list is the kill switch. Writes are atomic (temp file + rename), and
each one appends a line to `flags.log` next to the file (who set what, when): an audit trail
for operators, and how the fault tests count writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity

from relman.activities.environment import EnvironmentDir
from relman.activities.services import service_spec
from relman.catalog import Catalog
from relman.contracts import Activity, ExposureInput, ExposureResult

log = structlog.get_logger(__name__)

FLAGS_FILE = "flags.json"
FLAGS_LOG = "flags.log"
_BUCKETS = 10_000  # 0.01% resolution


def bucket(user_key: str, salt: str) -> float:
    """The user's fixed position in [0, 100), from a hash of salt and key."""
    digest = hashlib.sha256(f"{salt}\0{user_key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % _BUCKETS) * 100 / _BUCKETS


def in_cohort(user_key: str, percent: float, allow_list: list[str] | tuple[str, ...], salt: str) -> bool:
    """Whether this user sees the new version: allow-listed, or hashed below `percent`."""
    if user_key in allow_list:
        return True
    return percent > 0 and bucket(user_key, salt) < percent


def read_flags(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def write_flags(path: Path, flags: dict[str, Any]) -> None:
    """Atomic replace: readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
    with tmp.open("w") as f:
        json.dump(flags, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ExposureActivities:
    """Sets dark-launch exposure in each environment's flags file."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def flags_path(self, service: str, environment: Any) -> Path:
        spec = service_spec(self.catalog, service)
        return spec.env_dir(environment) / FLAGS_FILE

    @activity.defn(name=Activity.SET_EXPOSURE)
    async def set_exposure(self, inp: ExposureInput) -> ExposureResult:
        """Expose `inp.version` to `percent`% plus the allow-list; idempotent."""
        path = self.flags_path(inp.service, inp.environment)
        # The environment lock also guards the flags file (read-modify-write of one service's entry).
        env = EnvironmentDir(path.parent, f"{inp.service}/{inp.environment.value}")
        async with env.locked(inp.idempotency_key):
            flags = read_flags(path)
            entry = {
                "version": inp.version,
                "percent": inp.percent,
                "allow_list": sorted(set(inp.allow_list)),
                "salt": inp.service,
            }
            old = flags.get(inp.service, {})
            if {k: old.get(k) for k in entry} == entry:
                return ExposureResult(percent=inp.percent, changed=False)
            flags[inp.service] = {
                **entry,
                "enabled": inp.percent > 0 or bool(inp.allow_list),
                "updated_by": inp.idempotency_key,
                "updated_at": datetime.now(UTC).isoformat(),
            }
            write_flags(path, flags)
            line = json.dumps({"key": inp.idempotency_key, **flags[inp.service]}, sort_keys=True)
            with (path.parent / FLAGS_LOG).open("a") as audit:
                audit.write(line + "\n")
        log.info(
            "exposure.set",
            key=inp.idempotency_key,
            service=inp.service,
            env=inp.environment.value,
            version=inp.version,
            percent=inp.percent,
            allow_list=len(inp.allow_list),
        )
        return ExposureResult(percent=inp.percent, changed=True)
