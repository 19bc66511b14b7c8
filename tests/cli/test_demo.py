"""`relman demo --exit`: the README's first command, ending by itself with the expected outcomes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relman.devserver import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_both_releases_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELMAN_", "TEMPORAL_"))}
    env["RELMAN_DATA_DIR"] = str(tmp_path)
    port, ui_port = free_port(), free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relman.starter",
            "demo",
            "--exit",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"Temporal UI: http://127.0.0.1:{ui_port}/namespaces/default/workflows" in out
    assert "refused: pat requested this release and cannot approve it" in out
    # Every message is signed: a vote signed with someone else's key (a signal: the refusal is
    # in the status) and an unsigned one (the decide update) count for nothing.
    assert "mallory signs a vote as alice with her own key and signals it" in out
    assert "refused approve at request claimed by alice: key " in out
    assert "is not a key of alice in the catalog" in out
    assert "refused: alice's message is not signed, and this service requires signatures" in out
    for phase in ("awaiting_plan_approval", "building", "testing", "dark_launch", "deploying", "reviewing"):
        assert f"  {phase}" in out
    good = [line for line in out.splitlines() if line.startswith("[good]")]
    order = [i for i, line in enumerate(good) if "stage quarter (25%): pass" in line or "  deploying" in line]
    # A stage's verdict is printed before the phase it leads to.
    assert len(order) == 2 and "stage quarter" in good[order[0]], good
    assert "release-greeter-1.1.0: completed — as expected" in out
    assert "release-greeter-1.3.0: rolled_back — as expected" in out
    if shutil.which("prometheus", path=env.get("PATH")):
        # The demo says where health comes from, and 1.3.0's errors are Prometheus' finding.
        assert "health from Prometheus at http://127.0.0.1:" in out
        assert "health failed: prometheus analysis fail: error_rate fail" in out
    else:
        assert "health from the greeter's probe (no `prometheus` binary on PATH)" in out
    # Then the train: one approval, three components in dependency waves, one change record.
    assert "[train] waves, from the catalog's relationships: greeter-db | greeter | greeter-worker" in out
    assert "train-greeter-2-0: completed — as expected" in out
    assert "change train-greeter-2-0: closed, close code successful" in out
    for ci in ("greeter", "greeter-db", "greeter-worker"):
        assert f"CI {ci} now at version 2.0.0" in out
    assert "DORA (24h): 4 deployment(s), 0 failed" in out
    # The good release's and the train's evidence, read from the CMDB, verify as `relman verify` says.
    verified = [line.strip() for line in out.splitlines() if "evidence verified:" in line]
    assert len(verified) == 2, out
    assert verified[0].startswith("evidence verified: release-greeter-1.1.0 completed, ")
    assert verified[0].endswith(" signatures, gates request 2/2, plan 2/2")
    assert verified[1].startswith("evidence verified: train-greeter-2-0 completed, "), verified[1]
    assert (tmp_path / "demo" / "keys" / "alice.key").exists()
    # The worker's JSON logs carry the release, phase and activity.
    log = (tmp_path / "demo" / "worker.log").read_text()
    assert '"release_id": "release-greeter-1.3.0"' in log and '"activity": "rollback"' in log
