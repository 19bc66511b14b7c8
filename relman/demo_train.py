"""The demo's release train: three example components approved once, delivered in waves.

`examples/releases/train-greeter-2.0.yaml` (greeter-db, then greeter, then greeter-worker, in
the order the catalog's relationships give). The demo acts as the CAB: at each of the train's
two gates it approves with one member of every component's CAB and as many more as the largest
quorum needs, every vote signed. What the train does is printed as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import WorkflowFailureError

from relman.client import ReleaseClient, load_any_manifest
from relman.contracts import GateState, GateStatus, Outcome
from relman.contracts.train import TrainRequest
from relman.contracts.train_run import TrainStatus
from relman.errors import RelmanError

LABEL = "[train] "


def approvers_for(gate: GateStatus, requester: str) -> list[str]:
    """Who the demo asks to approve an open train gate: one member of each component's approvers
    not yet represented, then others until the quorum is met (never the requester)."""
    approved = {a.vote.on_behalf_of or a.vote.approver for a in gate.votes if a.vote.decision == "approve"}
    chosen: list[str] = []
    for members in gate.groups.values():
        if approved & set(members) or set(chosen) & set(members):
            continue
        pick = next((m for m in members if m != requester and m in gate.eligible), None)
        if pick is not None:
            chosen.append(pick)
    for member in gate.eligible:
        if len(approved) + len(chosen) >= gate.required:
            break
        if member not in approved and member not in chosen and member != requester:
            chosen.append(member)
    return chosen


async def drive_train(
    client: ReleaseClient, manifest: Path, emit: Callable[[str], None], timeout: float = 400.0
) -> TrainStatus:
    loaded = load_any_manifest(manifest)
    if not isinstance(loaded, TrainRequest):
        raise RelmanError(f"{manifest} is not a train manifest")
    request = loaded.model_copy(update={"committed_at": datetime.now(UTC) - timedelta(hours=1)})
    train_id = await client.start_train(request)
    emit(f"{LABEL}started {train_id}: {request.title}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: dict[str, str] = {}
    voted: set[tuple[str, str, str]] = set()
    while True:
        st = await client.train_status(train_id)
        if st.waves and "waves" not in seen:
            seen["waves"] = " | ".join(", ".join(w) for w in st.waves)
            emit(f"{LABEL}waves, from the catalog's relationships: {seen['waves']}")
        if seen.get("phase") != st.phase.value:
            seen["phase"] = st.phase.value
            emit(f"{LABEL}{st.phase.value}")
        for service, c in st.components.items():
            if seen.get(service) != c.state.value:
                seen[service] = c.state.value
                emit(f"{LABEL}  {service} {c.version}: {c.state.value}")
        for gate, g in st.gates.items():
            if g.state is not GateState.OPEN:
                continue
            for member in approvers_for(g, request.requested_by):
                key = (gate.value, g.subject_hash, member)
                if key in voted:
                    continue
                voted.add(key)
                after = await client.approve(train_id, member, gate, subject_hash=g.subject_hash)
                emit(f"{LABEL}  {member} approves the train's {gate.value} gate (gate {after.state.value})")
        if st.outcome is not None:
            # The outcome shows before the run has written its change record and evidence.
            with contextlib.suppress(WorkflowFailureError):
                await client.client.get_workflow_handle(train_id).result()
            emit(f"{LABEL}closed {st.outcome.value}" + (f": {st.reason}" if st.reason else ""))
            return st
        if loop.time() > deadline:
            raise RelmanError(f"{train_id} did not finish within {timeout:.0f}s (phase {st.phase.value})")
        await asyncio.sleep(0.5)


def expected(status: TrainStatus) -> bool:
    return status.outcome is Outcome.COMPLETED
