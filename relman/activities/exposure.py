"""Exposure activity: the service's flagd flag in `<env base>/flags.flagd.json`.

Each write builds the service's flag (relman/activities/flagd.py), validates the whole
document against flagd's schema and replaces the file atomically under the environment lock;
each write that changes the flag appends a line to `flags.log` next to the file (who set
what, when): an audit trail for operators, and how the fault tests count writes.

Before returning (so before the workflow's bake starts) it reads the flag back through the
OpenFeature SDK with flagd's in-process file provider, as a service does, for synthetic
targeting keys and every allow-listed key. A flag that does not evaluate as written fails
the step for good (`ExposureMismatch`), and the release rolls back.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.activities import flagd
from relman.activities.environment import EnvironmentDir
from relman.activities.flag_reader import read_back
from relman.activities.services import service_spec
from relman.catalog import Catalog
from relman.contracts import Activity, Environment, ErrorType, ExposureInput, ExposureResult

log = structlog.get_logger(__name__)


class ExposureActivities:
    """Sets dark-launch exposure in each environment's flagd file and reads it back."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def flags_path(self, service: str, environment: Environment) -> Path:
        spec = service_spec(self.catalog, service)
        return spec.env_dir(environment) / flagd.FLAGS_FILE

    def _flag(self, inp: ExposureInput, document: dict[str, object]) -> flagd.ExposureFlag:
        spec = service_spec(self.catalog, inp.service)
        key = spec.exposure.flag or inp.service
        # What production served before this release: captured at its first exposure, kept
        # after. A first release has nothing before it; `previous` is then the new version
        # itself (there is nothing else to fall back to; the kill switch changes no version).
        previous = (
            flagd.kept_previous(document, key, inp.release_id)
            or EnvironmentDir(spec.env_dir(Environment.PRODUCTION)).current()
            or inp.version
        )
        return flagd.ExposureFlag(
            key=key,
            release=inp.release_id,
            version=inp.version,
            previous=previous,
            percent=inp.percent,
            allow_list=tuple(inp.allow_list),
            digest=inp.digest,
            stage=inp.stage or inp.step,
        )

    @activity.defn(name=Activity.SET_EXPOSURE)
    async def set_exposure(self, inp: ExposureInput) -> ExposureResult:
        """Expose `inp.version` to `percent`% plus the allow-list; idempotent; read back."""
        spec = service_spec(self.catalog, inp.service)
        path = self.flags_path(inp.service, inp.environment)
        # The environment lock also guards the flags file (read-modify-write of one flag).
        env = EnvironmentDir(path.parent, f"{inp.service}/{inp.environment.value}")
        async with env.locked(inp.idempotency_key):
            try:
                document = flagd.read_document(path)
                flag = self._flag(inp, document)
                old = (document.get("flags") or {}).get(flag.key)
                changed = old != flagd.definition(flag)
                if changed:
                    flagd.write_document(path, flagd.with_flag(document, flag))
                    self._audit(path, inp, flag)
            except flagd.FlagdError as exc:
                raise ApplicationError(
                    str(exc), type=ErrorType.EXPOSURE_MISMATCH, non_retryable=True
                ) from None
            # Under the lock: no other write to this file can land between ours and the check.
            result = await asyncio.to_thread(
                read_back, path, flag, spec.exposure.sample_keys, spec.exposure.reload_timeout
            )
        if result.problem is not None:
            log.error("exposure.mismatch", key=inp.idempotency_key, path=str(path), problem=result.problem)
            raise ApplicationError(
                f"flag {flag.key!r} in {path} does not evaluate as written: {result.problem}",
                type=ErrorType.EXPOSURE_MISMATCH,
                non_retryable=True,
            )
        log.info(
            "exposure.set",
            key=inp.idempotency_key,
            service=inp.service,
            env=inp.environment.value,
            flag=flag.key,
            version=inp.version,
            previous=flag.previous,
            percent=inp.percent,
            allow_list=len(flag.allow_list),
            changed=changed,
            share=result.share,
        )
        return ExposureResult(percent=inp.percent, changed=changed)

    @staticmethod
    def _audit(path: Path, inp: ExposureInput, flag: flagd.ExposureFlag) -> None:
        line = {
            "key": inp.idempotency_key,
            "flag": flag.key,
            "version": flag.version,
            "previous": flag.previous,
            "percent": flag.percent,
            "allow_list": list(flag.allow_list),
            "stage": flag.stage,
            "digest": flag.digest,
            "at": datetime.now(UTC).isoformat(),
        }
        with (path.parent / flagd.FLAGS_LOG).open("a") as audit:
            audit.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
