"""`relman verify` and `relman evidence` as a user runs them: subprocesses, no Temporal server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relman.cmdb import CmdbStore
from relman.contracts import CloseCode, EvidenceRecord
from relman.identity.evidence import build_statement, envelope_digest, sign_envelope
from tests.identity.evidence_support import ARTIFACT, RELEASE_ID, Cast, artifact_file, closed_release

ROOT = Path(__file__).resolve().parents[2]


def relman(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relman.starter", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def write_catalog(path: Path, cast: Cast, *, cab: list[str] | None = None) -> Path:
    """A catalog an auditor might hold: people, evidence key and roles; no service directories."""
    catalog = {
        "people": {name: {"keys": [s.public]} for name, s in cast.signers.items()},
        "evidence": {"keys": [cast.worker.public]},
        "services": {
            "greeter": {
                "stages": [
                    {"name": "canary", "percent": 5, "bake_seconds": 60},
                    {"name": "half", "percent": 50, "bake_seconds": 60},
                ],
                "cab": {"members": cab or ["alice", "bob", "carol"], "quorum": 2},
                "operators": ["oscar"],
                "change_managers": ["cora"],
                "release_managers": ["max"],
                "workdir": "/nonexistent/greeter",  # the auditor does not have it
            }
        },
    }
    path.write_text(yaml.safe_dump(catalog))
    return path


@pytest.fixture(scope="module")
def cast() -> Cast:
    return Cast()


@pytest.fixture(scope="module")
def envelope(cast: Cast) -> dict[str, Any]:
    return sign_envelope(build_statement(closed_release(cast), CloseCode.SUCCESSFUL), cast.worker)


@pytest.fixture
def files(tmp_path: Path, cast: Cast, envelope: dict[str, Any]) -> tuple[Path, Path, Path]:
    evidence = tmp_path / "evidence.json"
    evidence.write_text(json.dumps(envelope))
    return evidence, write_catalog(tmp_path / "catalog.yaml", cast), artifact_file(tmp_path)


def test_verify_passes(files: tuple[Path, Path, Path]) -> None:
    evidence, catalog, artifact = files
    done = relman("verify", evidence, "--catalog", catalog, "--artifact", artifact)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"evidence verified: {RELEASE_ID} completed, 11 signatures, gates request 2/2, plan 2/2, marginal 1/1"
    )


def test_verify_json(files: tuple[Path, Path, Path]) -> None:
    evidence, catalog, _ = files
    done = relman("verify", evidence, "--catalog", catalog, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["release_id"] == RELEASE_ID and report["findings"] == []


def test_one_byte_changed_in_the_envelope(files: tuple[Path, Path, Path], envelope: dict[str, Any]) -> None:
    evidence, catalog, _ = files
    body = bytearray(base64.b64decode(envelope["payload"]))
    body[body.index(b"1.1.0")] = ord("2")  # another version: still valid JSON
    evidence.write_text(json.dumps({**envelope, "payload": base64.b64encode(bytes(body)).decode()}))
    done = relman("verify", evidence, "--catalog", catalog)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == (
        "error: the envelope's signature does not verify with any evidence key of the catalog "
        "(the payload or signature was altered, or another key signed it)."
    )
    assert all(line.startswith("error: ") for line in lines)


def test_a_vote_changed_and_the_envelope_resigned(
    files: tuple[Path, Path, Path], envelope: dict[str, Any], cast: Cast
) -> None:
    evidence, catalog, _ = files
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["gates"][0]["votes"][1]["vote"]["comment"] = "bob approved, honest"
    evidence.write_text(json.dumps(sign_envelope(statement, cast.worker)))
    done = relman("verify", evidence, "--catalog", catalog)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: gate request: bob's approve: the signature by bob does not match this message "
        "(forged, altered, or signed for another release, gate or hash).",
        "error: gate request is recorded approved with 1 valid approval(s) of the 2 the catalog requires.",
    ]


def test_approver_no_longer_in_the_catalog(
    files: tuple[Path, Path, Path], cast: Cast, tmp_path: Path
) -> None:
    evidence, _, _ = files
    catalog = write_catalog(tmp_path / "later.yaml", cast, cab=["alice", "carol"])
    done = relman("verify", evidence, "--catalog", catalog)
    assert done.returncode == 1
    assert (
        "error: gate request is recorded approved with 1 valid approval(s) of the 2 the catalog requires."
        in (done.stderr.splitlines())
    )


def test_wrong_artifact(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    evidence, catalog, artifact = files
    artifact.write_bytes(ARTIFACT.replace(b"1.1.0", b"1.1.1"))
    done = relman("verify", evidence, "--catalog", catalog, "--artifact", artifact)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("error: artifact greeter-1.1.0.whl has sha256 ")
    assert line.endswith(f"(the evidence says {hashlib.sha256(ARTIFACT).hexdigest()[:16]}…).")


def test_missing_files_are_one_line(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    evidence, catalog, _ = files
    done = relman("verify", tmp_path / "nope.json", "--catalog", catalog)
    assert done.returncode == 1 and done.stderr.startswith(f"error: evidence file {tmp_path / 'nope.json'}")
    done = relman("verify", evidence, "--catalog", catalog, "--artifact", tmp_path / "nope.whl")
    assert done.returncode == 1 and done.stderr.startswith(f"error: artifact {tmp_path / 'nope.whl'} cannot")
    done = relman("verify", evidence, "--catalog", tmp_path / "nope.yaml")
    assert done.returncode == 1 and "cannot read the catalog" in done.stderr


def test_export_from_the_cmdb_then_verify(tmp_path: Path, cast: Cast, envelope: dict[str, Any]) -> None:
    url = f"sqlite:///{tmp_path}/cmdb.sqlite"
    store = CmdbStore(url)
    try:
        record = EvidenceRecord(envelope_sha256=envelope_digest(envelope), key_id=cast.worker.key_id)
        store.put_evidence(f"{RELEASE_ID}/evidence", RELEASE_ID, envelope, record)
    finally:
        store.close()
    env = {**os.environ, "RELMAN_CMDB_URL": url, "RELMAN_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "exported.json"
    done = relman("evidence", RELEASE_ID, "-o", out, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"evidence of {RELEASE_ID} written to {out} (sha256 {record.envelope_sha256})"
    )
    done = relman("verify", out, "--catalog", write_catalog(tmp_path / "catalog.yaml", cast), env=env)
    assert done.returncode == 0, done.stderr

    done = relman("evidence", "release-nothing-1.0.0", env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the CMDB has no evidence for release-nothing-1.0.0; evidence is written when a release closes"
    )
