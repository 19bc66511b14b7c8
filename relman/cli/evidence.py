"""`relman evidence` exports a release's signed evidence; `relman verify` checks it offline.

`verify` needs no Temporal server and no CMDB: the evidence file, the catalog (for who may
do what and the worker's evidence keys) and, optionally, the artifacts themselves.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

import typer

from relman.cli.common import ReleaseIdArg, fail
from relman.errors import RelmanError
from relman.identity.evidence import EvidenceReport, verify_evidence


def evidence_cmd(
    release_id: ReleaseIdArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the envelope here (default: stdout).")
    ] = None,
) -> None:
    """Export a closed release's signed evidence (a DSSE envelope) from the CMDB."""
    # Imported here: reading settings and the CMDB is for this command only, and `verify`
    # must start without either.
    from relman.cmdb import CmdbStore
    from relman.cmdb.errors import CmdbError
    from relman.config import load_settings

    try:
        store = CmdbStore(load_settings().cmdb)
    except (RelmanError, CmdbError) as exc:
        raise fail(str(exc)) from None
    try:
        stored = store.get_evidence(release_id)
    except CmdbError as exc:
        raise fail(f"CMDB: {exc}") from None
    finally:
        store.close()
    if stored is None:
        raise fail(f"the CMDB has no evidence for {release_id}; evidence is written when a release closes")
    text = json.dumps(stored.envelope, indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}") from None
    typer.echo(f"evidence of {release_id} written to {output} (sha256 {stored.envelope_sha256})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise fail(f"artifact {path} cannot be read: {exc.strerror}") from None
    return digest.hexdigest()


def summary(report: EvidenceReport) -> str:
    """The one line of a verified release: what it was, how it ended, what held it up."""
    gates = ", ".join(f"{g.gate} {g.approvals}/{g.required}" for g in report.gates if g.required) or "none"
    outcome = report.outcome.value if report.outcome else "open"
    return f"evidence verified: {report.release_id} {outcome}, {report.signatures} signatures, gates {gates}"


def verify_cmd(
    file: Annotated[Path, typer.Argument(help="Evidence file (from `relman evidence ID -o FILE`).")],
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Catalog file (default: RELMAN_CATALOG's).")
    ] = None,
    artifact: Annotated[
        list[Path] | None,
        typer.Option("--artifact", help="An artifact file whose sha256 must be a subject (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check release evidence offline: the envelope, every signature, role and quorum, the artifacts."""
    from relman.catalog import CatalogError, read_trust
    from relman.config import load_settings

    try:
        settings = load_settings()
        # Key files resolve against the data dir the worker uses, as for every other command.
        trust = read_trust(catalog or settings.require_catalog(), data_dir=settings.data_dir)
    except (CatalogError, RelmanError) as exc:
        raise fail(str(exc)) from None
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise fail(f"evidence file {file} cannot be read: {exc.strerror}") from None
    artifacts = {path.name: _sha256(path) for path in artifact or []}
    report = verify_evidence(data, trust.services, trust.evidence_keys, artifacts)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    elif report.ok:
        typer.echo(summary(report))
    else:
        for finding in report.findings:
            typer.echo(f"error: {finding}", err=True)
    if not report.ok:
        raise typer.Exit(1)
