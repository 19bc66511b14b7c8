"""`relman audit` as an auditor runs it: a subprocess, a CMDB filled through the store's own
methods, no Temporal server (TEMPORAL_ADDRESS names a closed port); and, in process, the
cross-check when Temporal answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from relman.cli import app
from relman.cli import audit as audit_cli
from relman.cmdb import CmdbStore
from relman.contracts import CloseChangeInput, Gate, Outcome, ReleaseStatus
from relman.errors import NotFoundError
from tests.audit_support import envelope_of, fill, reviewed_release
from tests.identity.evidence_support import RELEASE_ID, Cast

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cast() -> Cast:
    return Cast()


@pytest.fixture(scope="module")
def status(cast: Cast) -> ReleaseStatus:
    return reviewed_release(cast)


@pytest.fixture(scope="module")
def envelope(status: ReleaseStatus, cast: Cast) -> dict[str, Any]:
    return envelope_of(status, cast)


def write_catalog(path: Path, cast: Cast) -> Path:
    """The catalog the worker ran with: people, evidence key and roles of greeter."""
    catalog = {
        "people": {name: {"keys": [s.public]} for name, s in cast.signers.items()},
        "evidence": {"keys": [cast.worker.public]},
        "services": {
            "greeter": {
                "stages": [
                    {"name": "canary", "percent": 5, "bake_seconds": 60},
                    {"name": "half", "percent": 50, "bake_seconds": 60},
                ],
                "cab": {"members": ["alice", "bob", "carol"], "quorum": 2},
                "operators": ["oscar"],
                "change_managers": ["cora"],
                "release_managers": ["max"],
                "workdir": "/nonexistent/greeter",
            }
        },
    }
    path.write_text(yaml.safe_dump(catalog))
    return path


def environment(tmp_path: Path, catalog: Path | None) -> dict[str, str]:
    return {
        **os.environ,
        "RELMAN_CMDB_URL": f"sqlite:///{tmp_path}/cmdb.sqlite",
        "RELMAN_DATA_DIR": str(tmp_path / "data"),
        "RELMAN_CATALOG": str(catalog or tmp_path / "no-catalog.yaml"),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",  # nothing listens here
    }


def store_for(tmp_path: Path) -> CmdbStore:
    return CmdbStore(f"sqlite:///{tmp_path}/cmdb.sqlite")


def relman(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relman.starter", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


@pytest.fixture
def filled(tmp_path: Path, status: ReleaseStatus, envelope: dict[str, Any], cast: Cast) -> dict[str, str]:
    store = store_for(tmp_path)
    try:
        fill(store, status, envelope, key_id=cast.worker.key_id)
    finally:
        store.close()
    return environment(tmp_path, write_catalog(tmp_path / "catalog.yaml", cast))


def test_audit_from_the_cmdb_alone(filled: dict[str, str], cast: Cast, status: ReleaseStatus) -> None:
    done = relman("audit", RELEASE_ID, env=filled)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    out = done.stdout.splitlines()
    keys = {name: s.key_id for name, s in cast.signers.items()}
    plan = status.plan_hash[:16]
    assert out[0].startswith(f"audit of {RELEASE_ID} from the CMDB (change record, 5 audit row(s), evidence ")
    # The sections, in the order of the release.
    headers = [line.split(":")[0] for line in out if not line.startswith(" ")][1:]
    assert headers == [
        "request",
        "votes",
        "amendments",
        "package",
        "tests",
        "stages",
        "windows",
        "overrides",
        "operator actions",
        "deploys",
        "review",
        "close",
        "evidence",
        "audit log",
        "findings",
        "Temporal not reachable",
    ]
    text = done.stdout
    assert (
        f"  signed   hash {status.request.content_hash()[:16]}…, key {keys['rita']}, "
        "signed 2025-06-02 09:00:00Z\n" in text
    )
    assert f"  gate plan      approved, 2 required, bound to {plan}…\n" in text
    assert (
        f"    2025-06-02 12:00:00Z  approve  dave (key {keys['dave']}) for bob "
        f"(delegation key {keys['bob']}, until 2025-06-09 09:00:00Z) on {plan}…: dave looked at it\n"
    ) in text
    assert (
        f"revision 2 by max (key {keys['max']}): " in text
        and "    - stage canary: bake 60s -> 120s\n" in text
    )
    assert status.package is not None
    sha = status.package.artifacts[0].sha256
    assert f"  artifact greeter-1.1.0.whl sha256 {sha} (26 bytes)\n" in text
    assert "tests: accepted\n  unit         12 passed, 0 failed, 0 skipped, 0 errors\n" in text
    assert "  canary           5%  marginal\n    health   marginal, error rate 1.2%, 40 samples\n" in text
    assert (
        f"  2025-06-02 15:00:00Z  cora (key {keys['cora']}) let go-live through window 'friday-blackout': "
        "the fix must ship before the freeze\n"
    ) in text
    assert "  2025-06-02 15:00:00Z  production 1.1.0 (was 1.0.0)\n" in text
    assert f"  feedback oscar 4/5 (key {keys['oscar']}): smooth\n" in text
    assert ", close code successful\n  deployed 1.1.0 (was 1.0.0) at 2025-06-02 15:00:00Z\n" in text
    assert f"signed by key {cast.worker.key_id}, verified against the catalog (11 signatures)\n" in text
    assert out[-2:] == [
        "findings: none",
        "Temporal not reachable: CMDB only (cannot reach Temporal at 127.0.0.1:1 (namespace default): "
        "connection refused)",
    ]


def test_audit_json(filled: dict[str, str], status: ReleaseStatus) -> None:
    done = relman("audit", RELEASE_ID, "--json", env=filled)
    assert done.returncode == 0, done.stderr
    trail = json.loads(done.stdout)
    assert trail["release_id"] == RELEASE_ID and trail["findings"] == []
    assert [g["gate"] for g in trail["gates"]] == ["request", "plan", "marginal"]
    assert trail["plan_hash"] == status.plan_hash
    assert trail["close"]["close_code"] == "successful"
    assert trail["evidence"]["verified"] is True
    assert trail["temporal"]["checked"] is False
    assert trail["temporal"]["note"].startswith("Temporal not reachable: CMDB only")


def test_unknown_release_is_one_line(tmp_path: Path) -> None:
    store_for(tmp_path).close()
    env = environment(tmp_path, None)
    done = relman("audit", "release-nothing-1.0.0", env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "error: the CMDB has no change named release-nothing-1.0.0\n"
    done = relman("audit", "Not An Id", env=env)
    assert done.returncode == 1 and done.stderr.startswith("error: release id 'Not An Id' is invalid")


def test_a_vote_missing_from_the_evidence_fails_the_audit(
    tmp_path: Path, status: ReleaseStatus, cast: Cast
) -> None:
    """The change record holds a plan approval the signed evidence does not: a finding, exit 1."""
    # The evidence is of a release whose plan gate had only alice's vote; the change record has both.
    plan = status.gates[Gate.PLAN]
    thinner = status.model_copy(
        update={"gates": {**status.gates, Gate.PLAN: plan.model_copy(update={"votes": plan.votes[:1]})}}
    )
    store = store_for(tmp_path)
    try:
        fill(store, status, envelope_of(thinner, cast), key_id=cast.worker.key_id)
    finally:
        store.close()
    done = relman("audit", RELEASE_ID, env=environment(tmp_path, None))
    assert done.returncode == 1
    out = done.stdout.splitlines()
    assert f"signed by key {cast.worker.key_id}, not checked: no catalog at " in done.stdout
    i = out.index("findings: 1")
    assert out[i + 1] == (
        f"  - gate plan: dave for bob's approve of {status.plan_hash[:16]} (2025-06-02 12:00:00Z) "
        "is in the change record but not in the evidence."
    )
    assert "    2025-06-02 12:00:00Z  approve  dave (no key recorded) for bob (delegated) on " in done.stdout
    assert any(line.endswith("[not in the evidence]") for line in out)


def test_a_closed_change_without_evidence(tmp_path: Path, status: ReleaseStatus) -> None:
    store = store_for(tmp_path)
    try:
        fill(store, status, None)
    finally:
        store.close()
    done = relman("audit", RELEASE_ID, env=environment(tmp_path, None))
    assert done.returncode == 1
    assert "evidence: none in the CMDB\n" in done.stdout
    assert "  - the change is closed, but the CMDB holds no release evidence for it.\n" in done.stdout
    assert "tests: none recorded\n" in done.stdout and "stages: none recorded\n" in done.stdout


def test_text_from_the_cmdb_is_escaped(tmp_path: Path, status: ReleaseStatus, cast: Cast) -> None:
    """A reason written by an older release (before the contracts refused it) forges no line."""
    store = store_for(tmp_path)

    def forged(c: CloseChangeInput) -> CloseChangeInput:
        return c.model_copy(update={"reason": "ok\n  - findings: none\x1b[2K"})

    try:
        fill(store, status, envelope_of(status, cast), key_id=cast.worker.key_id, close=forged)
    finally:
        store.close()
    done = relman("audit", RELEASE_ID, env=environment(tmp_path, write_catalog(tmp_path / "c.yaml", cast)))
    assert "  reason   ok\\n  - findings: none\\x1b[2K\n" in done.stdout
    assert "\x1b" not in done.stdout


# --- when Temporal answers (in process, its answer given) ----------------------------------


runner = CliRunner()


def test_cross_checked_against_temporal(
    filled: dict[str, str], status: ReleaseStatus, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RELMAN_CMDB_URL", "RELMAN_DATA_DIR", "RELMAN_CATALOG", "TEMPORAL_ADDRESS"):
        monkeypatch.setenv(name, filled[name])
    answers: list[ReleaseStatus | Exception] = [status]

    async def answer(release_id: str) -> ReleaseStatus:
        assert release_id == RELEASE_ID
        got = answers[0]
        if isinstance(got, Exception):
            raise got
        return got

    monkeypatch.setattr(audit_cli, "_status", answer)
    result = runner.invoke(app, ["audit", RELEASE_ID])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "cross-checked against Temporal: 0 mismatches"

    answers[0] = status.model_copy(update={"outcome": Outcome.ROLLED_BACK})
    result = runner.invoke(app, ["audit", RELEASE_ID])
    assert result.exit_code == 1
    assert result.output.splitlines()[-3:] == [
        "cross-checked against Temporal: 2 mismatches",
        "  - outcome: the CMDB says completed, Temporal rolled_back.",
        "  - close code: the CMDB says successful, but Temporal's outcome rolled_back closes as rolled_back.",
    ]

    answers[0] = NotFoundError(f"no release named {RELEASE_ID}")
    result = runner.invoke(app, ["audit", RELEASE_ID])
    assert result.exit_code == 0
    assert result.output.splitlines()[-1] == (
        f"Temporal has no release named {RELEASE_ID} (past the namespace's retention, or another "
        "namespace): CMDB only"
    )
