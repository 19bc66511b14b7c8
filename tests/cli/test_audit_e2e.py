"""`relman audit` on a real release: a dev server, the example's worker, the CLI as a subprocess.

The worker writes the change record, the audit rows and the signed evidence; the audit reads
them back and, with the server up, finds nothing in Temporal's history that disagrees.
"""

from __future__ import annotations

import json
import uuid

import pytest

from relman.contracts import Gate, Outcome
from tests.cli.test_e2e import MANIFEST, Cli, cli, gate_open

__all__ = ["cli"]  # the fixture, imported to be used here

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_audit_of_a_real_release_matches_temporal(cli: Cli) -> None:
    rid = f"release-greeter-1.1.0-{uuid.uuid4().hex[:6]}"
    await cli("start", str(MANIFEST), "--id", rid)
    for gate in (Gate.REQUEST, Gate.PLAN):
        await cli.until(rid, gate_open(gate))
        for member in ("alice", "bob"):
            await cli.client.approve(rid, member, gate)
    await cli.until(rid, lambda st: st.phase.value == "reviewing" or st.outcome is not None, timeout=90)
    await cli.client.feedback(rid, "alice", 5, "smooth")
    final = await cli.until(rid, lambda st: st.outcome is not None, timeout=90)
    assert final.outcome is Outcome.COMPLETED, final.reason

    text = await cli("audit", rid)
    lines = text.splitlines()
    assert lines[-2:] == ["findings: none", "cross-checked against Temporal: 0 mismatches"], text
    assert "verified against the catalog" in text
    assert f"  gate plan      approved, 2 required, bound to {final.plan_hash[:16]}…" in text
    assert final.package is not None
    assert f"  digest   {final.package.digest}" in text

    trail = json.loads(await cli("audit", rid, "--json"))
    assert trail["temporal"] == {"checked": True, "note": "", "mismatches": []}
    assert [v["approver"] for v in trail["gates"][0]["votes"]] == ["alice", "bob"]
    assert all(v["key_id"] and len(v["recorded_in"]) == 2 for g in trail["gates"] for v in g["votes"])
    assert trail["close"]["close_code"] == "successful"
    assert trail["review"]["feedback"][0]["by"] == "alice"
