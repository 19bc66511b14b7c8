"""How `relman status` shows a release train: its gates, then its components as a tree by wave."""

from __future__ import annotations

import typer

from relman.cli.common import safe, short, table, ts
from relman.contracts import GateState, GateStatus
from relman.contracts.train_run import TrainStatus


def _gate(g: GateStatus) -> str:
    approvals = [a.vote.approver for a in g.votes if a.vote.decision == "approve"]
    text = f"{g.gate.value}: {g.state.value} {len(approvals)}/{g.required}"
    if approvals:
        text += f" ({', '.join(safe(a) for a in approvals)})"
    if g.state is GateState.OPEN:
        waiting = [m for m in g.eligible if m not in approvals]
        text += f", awaiting {', '.join(safe(m) for m in waiting) or '-'} until {ts(g.deadline)}"
        missing = [name for name, members in g.groups.items() if not set(members) & set(approvals)]
        if missing:
            text += f"; no approval yet from the approvers of {', '.join(safe(m) for m in missing)}"
    return text


def _suites(st: TrainStatus) -> str:
    """The manifest's train suites: each one's passed/ran once run, and the verdict."""
    if st.tests is None:
        return f"{', '.join(safe(n) for n in st.request.tests)}, not run yet"
    counts = ", ".join(f"{safe(s.name)} {s.passed}/{s.passed + s.failed + s.errors}" for s in st.tests.suites)
    return f"{counts}, {'accepted' if st.tests.accepted else 'not accepted'}"


def format_train_status(st: TrainStatus) -> str:
    """The train as an operator reads it: what it waits for, and each component in its wave."""
    request = st.request
    lines = [
        f"{safe(st.train_id)}  {safe(request.title)}",
        f"phase {st.phase.value}, outcome {st.outcome.value if st.outcome else '-'}"
        + (f": {safe(st.reason)}" if st.reason else "")
        + f"; requested by {safe(request.requested_by)}, risk {st.risk.value if st.risk else '-'}",
    ]
    if st.awaiting:
        lines.append(f"awaiting {', '.join(safe(a) for a in st.awaiting)}")
    if st.needs_operator:
        lines.append("operator action required")
    for g in st.gates.values():
        lines.append(f"gate {_gate(g)}")
    if st.plan_hash:
        lines.append(f"plan {short(st.plan_hash)}")
    if request.tests:
        lines.append(f"train suites: {_suites(st)}")
    waves = st.waves or [[c.service for c in request.components]]
    rows = [("wave", "component", "version", "state", "children")]
    for number, wave in enumerate(waves, start=1):
        for service in wave:
            c = st.components.get(service)
            if c is None:
                continue
            rows.append(
                (
                    str(number),
                    safe(service),
                    safe(c.version),
                    c.state.value + (" !" if c.needs_operator else ""),
                    ", ".join(safe(child.rsplit(".", 1)[-1]) for child in c.children) or "-",
                )
            )
    lines += ["", table(rows)]
    backout = [s for wave in reversed(waves) for s in reversed(wave)]
    lines.append(f"backout order: {', '.join(safe(s) for s in backout)}")
    issues = st.issues + [f"{safe(s)}: {safe(c.issue)}" for s, c in st.components.items() if c.issue]
    lines += [f"issue: {safe(i)}" for i in issues]
    lines += [f"refused: {safe(r.actor)} {safe(r.action)}: {safe(r.reason)}" for r in st.refusals[-5:]]
    return "\n".join(lines)


def print_train_status(st: TrainStatus) -> None:
    typer.echo(format_train_status(st))
