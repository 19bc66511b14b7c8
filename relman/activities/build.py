"""Build activity: run the catalog's build command and produce a verified release package.

Layout under the work root, one directory per release (the idempotency key's release id):
`<work_root>/<release_id>/package/` (artifacts + `manifest.json`) and `build.log`.
A verified package already there is returned as is, so a retried build does nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.activities.runner import command_env, run_command
from relman.activities.services import service_spec
from relman.catalog import Catalog, render_argv
from relman.contracts import Activity, Artifact, BuildInput, Component, ErrorType, ReleasePackage

log = structlog.get_logger(__name__)

MANIFEST = "manifest.json"
RELEASE_NOTES = "RELEASE_NOTES.md"


class PackageInvalid(Exception):
    """A package on disk does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def package_digest(artifacts: list[Artifact]) -> str:
    """One digest over every artifact (name and content), independent of their order."""
    lines = "".join(f"{a.name}\0{a.sha256}\n" for a in sorted(artifacts, key=lambda a: a.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def collect_artifacts(package_dir: Path, patterns: list[str]) -> list[Artifact]:
    """Every file matched by the catalog's globs, with digests; each glob must match."""
    found: dict[str, Path] = {}
    for pattern in patterns:
        matches = [p for p in sorted(package_dir.glob(pattern)) if p.is_file() and p.name != MANIFEST]
        if not matches:
            raise PackageInvalid(f"required artifact {pattern!r} is missing from the package")
        for p in matches:
            found[p.relative_to(package_dir).as_posix()] = p
    return [
        Artifact(name=name, sha256=sha256_file(p), size=p.stat().st_size) for name, p in sorted(found.items())
    ]


def read_manifest(package_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((package_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise PackageInvalid(f"{package_dir}: no readable {MANIFEST}: {exc}") from None
    if not isinstance(data, dict):
        raise PackageInvalid(f"{package_dir}: {MANIFEST} is not an object")
    return data


def verify_package(package_dir: Path) -> ReleasePackage:
    """Re-check every digest against the manifest; the package as the manifest describes it."""
    manifest = read_manifest(package_dir)
    try:
        artifacts = [Artifact.model_validate(a) for a in manifest["artifacts"]]
        service, version, digest = manifest["service"], manifest["version"], manifest["digest"]
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageInvalid(f"{package_dir}: malformed manifest: {exc}") from None
    for art in artifacts:
        path = package_dir / art.name
        if not path.is_file():
            raise PackageInvalid(f"{art.name} listed in the manifest is missing")
        if sha256_file(path) != art.sha256:
            raise PackageInvalid(f"{art.name}: sha256 differs from the manifest")
    if package_digest(artifacts) != digest:
        raise PackageInvalid("the package digest differs from its artifacts")
    return ReleasePackage(
        service=service,
        version=version,
        path=str(package_dir),
        artifacts=artifacts,
        digest=digest,
        release_notes=str(manifest.get("release_notes", ""))[:4000],
    )


class BuildActivities:
    """Builds release packages in `work_root`, one fresh directory per release."""

    def __init__(self, catalog: Catalog, work_root: Path) -> None:
        self.catalog = catalog
        self.work_root = Path(work_root)

    @activity.defn(name=Activity.BUILD_PACKAGE)
    async def build_package(self, inp: BuildInput) -> ReleasePackage:
        """Run the build, collect and digest artifacts, write and verify the manifest."""
        spec = service_spec(self.catalog, inp.service)
        release_dir = self.work_root / inp.release_id
        final = release_dir / "package"
        if final.is_dir():
            try:
                existing = verify_package(final)
                if existing.version == inp.version and existing.service == inp.service:
                    log.info("build.reused", key=inp.idempotency_key, digest=existing.digest)
                    return existing
            except PackageInvalid as exc:
                log.warning("build.discard_invalid", key=inp.idempotency_key, reason=str(exc))
            shutil.rmtree(final)

        # Build into a fresh directory and rename it into place only once verified, so a
        # crash mid-build never leaves something that looks like a finished package.
        attempt = release_dir / f".attempt-{uuid.uuid4().hex[:8]}"
        scratch = attempt / "work"
        package_dir = attempt / "package"
        scratch.mkdir(parents=True)
        package_dir.mkdir()
        argv = render_argv(
            spec.build.command,
            {
                "version": inp.version,
                "commit": inp.commit,
                "service": inp.service,
                "package_dir": str(package_dir),
                "work_dir": str(scratch),
                "source_dir": str(spec.workdir),
            },
        )
        log.info("build.start", key=inp.idempotency_key, argv=argv)
        result = await run_command(
            argv,
            cwd=spec.workdir,
            timeout=spec.build.timeout,
            env=command_env(spec.env),
            secrets=spec.secrets,
            output_path=release_dir / "build.log",
            heartbeat=lambda d: activity.heartbeat({"step": "build", **d}),
        )
        if not result.ok:
            shutil.rmtree(attempt, ignore_errors=True)
            why = (
                f"timed out after {spec.build.timeout:g}s"
                if result.timed_out
                else f"exit {result.returncode}"
            )
            raise ApplicationError(
                f"build of {inp.service} {inp.version} failed ({why}); output tail:\n{result.tail[-2000:]}",
                {"tail": result.tail[-8000:], "log": str(result.output_path)},
                type=ErrorType.BUILD_FAILED,
                non_retryable=True,
            )
        try:
            artifacts = collect_artifacts(package_dir, spec.build.artifacts)
        except PackageInvalid as exc:
            shutil.rmtree(attempt, ignore_errors=True)
            raise ApplicationError(str(exc), type=ErrorType.PACKAGE_INVALID, non_retryable=True) from None
        notes_file = package_dir / RELEASE_NOTES
        notes = notes_file.read_text(errors="replace")[:4000] if notes_file.is_file() else ""
        manifest = {
            "service": inp.service,
            "version": inp.version,
            "commit": inp.commit,
            "release_id": inp.release_id,
            "built_at": datetime.now(UTC).isoformat(),
            "components": [Component(name=inp.service, version=inp.version).model_dump()],
            "artifacts": [a.model_dump() for a in artifacts],
            "digest": package_digest(artifacts),
            "deploy_instructions": spec.build.deploy_instructions,
            "release_notes": notes or f"{inp.service} {inp.version} built from {inp.commit}.",
        }
        (package_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            verify_package(package_dir)
        except PackageInvalid as exc:
            raise ApplicationError(str(exc), type=ErrorType.PACKAGE_INVALID, non_retryable=True) from None
        package_dir.rename(final)
        shutil.rmtree(attempt, ignore_errors=True)
        package = verify_package(final)
        log.info("build.done", key=inp.idempotency_key, digest=package.digest, artifacts=len(artifacts))
        return package
