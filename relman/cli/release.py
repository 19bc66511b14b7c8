"""Release commands of the relman CLI: start, vote (approve, reject, delegate), amend-plan,
status, list, the operator controls and feedback; and the text they print."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError

from relman.cli.common import (
    JsonOpt,
    ReasonOpt,
    ReleaseIdArg,
    UserOpt,
    echo_json,
    fail,
    parse_time,
    run,
    safe,
    short,
    table,
    ts,
    with_client,
)
from relman.cli.keys import load_signer
from relman.client import (
    GATE_ORDER,
    GATE_WAIT,
    TRANSIENT,
    ReleaseClient,
    ReleaseSummary,
    build,
    load_manifest,
    load_plan,
    one_line,
)
from relman.config import load_settings
from relman.contracts import (
    GO_LIVE,
    AcceptanceCriteria,
    ActionResult,
    AmendmentRecord,
    Approval,
    Comment,
    Decision,
    Delegation,
    Feedback,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Phase,
    Proof,
    Reason,
    Refusal,
    ReleasePlan,
    ReleaseStatus,
    StageStatus,
    UserName,
    Verdict,
    WindowWait,
)
from relman.errors import RefusedError, RelmanError
from relman.identity.keys import Signer
from relman.identity.signing import seal
from relman.progress import RunningStep, StepTicker, describe_step

app = typer.Typer()
"""The release commands; `relman.cli` adds them to `relman` at the top level."""


class GateChoice(StrEnum):
    request = "request"
    plan = "plan"
    retro = "retro"
    marginal = "marginal"


OnBehalfOpt = Annotated[
    str | None, typer.Option(help="CAB member you vote for; needs --delegation.", show_default=False)
]
DelegationOpt = Annotated[
    Path | None,
    typer.Option(
        "--delegation", help="The delegation they signed for you (`relman delegate`).", show_default=False
    ),
]


@app.command()
def start(
    manifest: Annotated[Path, typer.Argument(help="Release manifest (YAML): service, version, commit...")],
    release_id: Annotated[
        str | None, typer.Option("--id", help="Release id (default: from service+version).")
    ] = None,
    as_json: JsonOpt = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print phase changes until it ends.")
    ] = False,
) -> None:
    """Start a release from a manifest; prints its id. The same release is never started twice."""
    try:
        request = load_manifest(manifest)
    except RelmanError as exc:
        raise fail(str(exc)) from None
    rid = with_client(lambda c: c.start(request, release_id))
    if as_json:
        echo_json({"release_id": rid, "service": request.service, "version": request.version})
    else:
        typer.echo(rid)
    if follow:
        final = with_client(lambda c: follow_release(c, rid, emit=typer.echo))
        typer.echo(f"{rid}: {final.outcome.value if final.outcome else '-'} {final.reason}".rstrip())


@app.command()
def approve(
    release_id: ReleaseIdArg,
    user: UserOpt,
    gate: Annotated[GateChoice | None, typer.Option(help="Gate to approve (default: the open one).")] = None,
    on_behalf_of: OnBehalfOpt = None,
    delegation_file: DelegationOpt = None,
    comment: Annotated[str, typer.Option(help="Comment recorded with the vote.")] = "",
    subject_hash: Annotated[
        str | None, typer.Option("--hash", help="Hash you approve (default: the gate's current one).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a gate (through the `decide` update: accepted, or refused with the reason).

    Prints first what the vote binds to: the plan, the request, or the marginal stage's health.
    """
    _vote(
        release_id,
        user,
        Decision.APPROVE,
        gate,
        on_behalf_of,
        delegation_file,
        comment,
        subject_hash,
        as_json,
    )


@app.command()
def reject(
    release_id: ReleaseIdArg,
    user: UserOpt,
    reason: ReasonOpt,
    gate: Annotated[GateChoice | None, typer.Option(help="Gate to reject (default: the open one).")] = None,
    on_behalf_of: OnBehalfOpt = None,
    delegation_file: DelegationOpt = None,
    subject_hash: Annotated[str | None, typer.Option("--hash", help="Hash you reject.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject (veto) a gate, with a reason."""
    _vote(
        release_id, user, Decision.REJECT, gate, on_behalf_of, delegation_file, reason, subject_hash, as_json
    )


def _vote(
    release_id: str,
    user: str,
    decision: Decision,
    gate: GateChoice | None,
    on_behalf_of: str | None,
    delegation_file: Path | None,
    comment: str,
    subject_hash: str | None,
    as_json: bool,
) -> None:
    if decision is Decision.APPROVE:
        check(approver=(UserName, user), comment=(Comment, comment))
    else:
        check(approver=(UserName, user), reason=(Reason, comment))
    delegation = None
    if delegation_file is not None:
        delegation = _delegation_for(delegation_file, user, on_behalf_of)
        on_behalf_of = delegation.delegator
    elif on_behalf_of is not None:
        raise fail(f"--on-behalf-of needs --delegation FILE, the delegation {on_behalf_of} signed for you")
    wanted = Gate(gate.value) if gate else None
    # Without --json the subject is printed before the vote goes out, and the vote names that
    # gate and hash explicitly: an amendment in between makes it refused, never silently rebound.
    show = None if as_json else typer.echo

    async def send(c: ReleaseClient) -> GateStatus:
        st = await c.wait_for(
            release_id,
            lambda s: (
                (wanted in s.gates if wanted else _open_gate(s) is not None)
                or s.phase not in TRANSIENT
                or s.outcome is not None
            ),
            timeout=GATE_WAIT,
        )
        chosen = wanted or _open_gate(st)
        if chosen is None:
            raise RefusedError(
                f"{release_id} has no open gate (phase {st.phase.value}); name one with --gate"
            )
        g = st.gates.get(chosen)
        if g is None or not g.subject_hash:
            raise RefusedError(f"{release_id} has no {chosen.value} gate yet (phase {st.phase.value})")
        bound = subject_hash or g.subject_hash
        if show is not None:
            show("\n".join(describe_subject(st, chosen, bound, decision)))
        if decision is Decision.APPROVE:
            return await c.approve(
                release_id,
                user,
                chosen,
                on_behalf_of=on_behalf_of,
                comment=comment,
                subject_hash=bound,
                delegation=delegation,
            )
        return await c.reject(
            release_id,
            user,
            chosen,
            reason=comment,
            on_behalf_of=on_behalf_of,
            subject_hash=bound,
            delegation=delegation,
        )

    result = with_client(send)
    if as_json:
        echo_json(result)
        return
    verb = "approved" if decision is Decision.APPROVE else "rejected"
    typer.echo(vote_line(result, release_id, verb, user, on_behalf_of))


def _open_gate(st: ReleaseStatus) -> Gate | None:
    return next((g for g in GATE_ORDER if g in st.gates and st.gates[g].state is GateState.OPEN), None)


def _delegation_for(path: Path, user: str, on_behalf_of: str | None) -> Delegation:
    """The delegation in `path`, checked to be for `user` (and from `on_behalf_of` if named)."""
    try:
        delegation = read_delegation(path)
    except RelmanError as exc:
        raise fail(str(exc)) from None
    if delegation.delegate != user:
        raise fail(f"the delegation in {path} lets {delegation.delegate} vote, not {user}")
    if on_behalf_of is not None and on_behalf_of != delegation.delegator:
        raise fail(f"the delegation in {path} is from {delegation.delegator}, not {on_behalf_of}")
    return delegation


def read_delegation(path: Path) -> Delegation:
    """A signed delegation from its JSON file (as `relman delegate` writes it)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RelmanError(f"delegation {path} not found") from None
    except OSError as exc:
        raise RelmanError(f"delegation {path} cannot be read: {exc.strerror}") from None
    try:
        return Delegation.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise RelmanError(f"delegation {path} is not valid JSON: {err['msg']}") from None
        raise RelmanError(f"delegation {path}: {one_line(exc)}") from None


def vote_line(g: GateStatus, release_id: str, verb: str, user: str, on_behalf_of: str | None = None) -> str:
    who = safe(user) + (f" for {safe(on_behalf_of)}" if on_behalf_of else "")
    return (
        f"{verb}: {g.gate.value} gate of {safe(release_id)} by {who}; "
        f"{g.approvals}/{g.required} approvals, gate {g.state.value}"
    )


def describe_subject(st: ReleaseStatus, gate: Gate, subject_hash: str, decision: Decision) -> list[str]:
    """What a vote at `gate` binds to, as the voter should read it before it is sent."""
    doing = "approving" if decision is Decision.APPROVE else "rejecting"
    rid = safe(st.release_id)
    lines: list[str]
    if gate is Gate.PLAN and st.plan is not None:
        lines = [f"{doing} the plan of {rid}: revision {st.plan.revision}, hash {short(subject_hash)}"]
        lines += plan_lines(st.plan, backout=False)
        if st.amendments:
            lines += amendment_lines(st.amendments[-1])
    elif gate is Gate.MARGINAL:
        stage = _marginal_stage(st)
        where = f"stage {safe(stage.name)} ({stage.percent:g}%)" if stage else "a marginal stage"
        lines = [f"{doing} {where} of {rid} despite marginal health, hash {short(subject_hash)}"]
        if stage is not None and stage.health is not None:
            lines.append(
                f"  health      {health_text(stage.health, st.plan.acceptance if st.plan else None)}"
            )
    else:
        r = st.request
        lines = [
            f"{doing} the {gate.value} gate of {rid}: {safe(r.service)} {safe(r.version)} "
            f"({r.change_type.value} change) requested by {safe(r.requested_by)}, hash {short(subject_hash)}",
            f"  title       {safe(r.title)}",
        ]
    current = st.gates[gate].subject_hash if gate in st.gates else ""
    if current and subject_hash != current:
        lines.append(
            f"  note: --hash is not the gate's current hash {short(current)}; the vote will be refused"
        )
    return lines


def _marginal_stage(st: ReleaseStatus) -> StageStatus | None:
    """The stage the open marginal gate decides: the latest one judged marginal."""
    marginal = [s for s in st.stages if s.verdict is Verdict.MARGINAL]
    return marginal[-1] if marginal else (st.stages[-1] if st.stages else None)


@app.command()
def delegate(
    user: UserOpt,
    to: Annotated[str, typer.Option("--to", help="Who may vote for you.", show_default=False)],
    services: Annotated[
        list[str],
        typer.Option("--service", help="A service they may vote on (repeat for more).", show_default=False),
    ],
    gates: Annotated[
        list[GateChoice],
        typer.Option("--gate", help="A gate they may vote at (repeat for more).", show_default=False),
    ],
    until: Annotated[
        str,
        typer.Option(
            "--until", help="Last moment it counts (ISO date/time, UTC if no zone).", show_default=False
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="File to write the signed delegation to (JSON).", show_default=False
        ),
    ],
) -> None:
    """Let someone vote for you (signed with your key); they pass the file to approve/reject --delegation."""
    not_after = parse_time(until, "--until")
    if not_after <= datetime.now(UTC):
        raise fail(f"--until {ts(not_after)} has passed; a delegation must end in the future")
    try:
        delegation = build(
            Delegation,
            delegator=user,
            delegate=to,
            services=list(dict.fromkeys(services)),
            gates=list(dict.fromkeys(g.value for g in gates)),
            not_after=not_after,
        )
        signed = seal(delegation, "*", _signer(user))
    except RelmanError as exc:
        raise fail(str(exc)) from None
    try:
        output.write_text(signed.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}") from None
    key = signed.proof.key_id if signed.proof else "-"
    typer.echo(
        f"wrote {output}: {safe(to)} may vote for {safe(user)} on {', '.join(delegation.services)} "
        f"at the {', '.join(g.value for g in delegation.gates)} gate(s) until {ts(not_after)} "
        f"(signed with key {key})"
    )


def _signer(name: str) -> Signer:
    return load_signer(load_settings(), name)


@app.command()
def status(
    release_id: ReleaseIdArg,
    as_json: JsonOpt = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print phase changes until it ends.")
    ] = False,
) -> None:
    """Phase, outcome, plan, gates with signed votes, stages with health, windows, refusals, timeline."""
    if follow:
        with_client(lambda c: follow_release(c, release_id, emit=typer.echo))
    if as_json:
        echo_json(with_client(lambda c: c.status(release_id)))
        return
    st, steps = with_client(lambda c: c.progress(release_id))
    typer.echo(format_status(st, steps))


def format_status(st: ReleaseStatus, steps: Sequence[RunningStep] = ()) -> str:
    """A release's status, and the steps it is running, as text for a terminal.

    Every string that came from a message goes through `safe`: one line of output is one line.
    """
    r = st.request
    lines = [
        f"{safe(st.release_id)}: {safe(r.service)} {safe(r.version)} ({r.change_type.value} change, "
        f"risk {st.risk.value if st.risk else '-'}) requested by {safe(r.requested_by)}",
        f"  {safe(r.title)}",
        f"phase     {st.phase.value}{'  (paused)' if st.paused else ''}",
        f"outcome   {st.outcome.value if st.outcome else '-'}"
        + (f"  ({safe(st.reason)})" if st.reason else ""),
        f"awaiting  {', '.join(safe(a) for a in st.awaiting) or '-'}",
    ]
    if st.plan is not None:
        lines.append(f"plan      revision {st.plan.revision}, hash {short(st.plan_hash)}")
        lines += plan_lines(st.plan)
        if st.amendments:
            lines += amendment_lines(st.amendments[-1])
    if st.package:
        lines.append(f"package   {short(st.package.digest)} ({len(st.package.artifacts)} artifact(s))")
    if st.tests is not None:
        suites = ", ".join(
            f"{safe(s.name)} {s.passed}/{s.passed + s.failed + s.errors}" for s in st.tests.suites
        )
        lines.append(f"tests     {'accepted' if st.tests.accepted else 'not accepted'}  {suites}".rstrip())
    if st.gates:
        lines.append("gates:")
        for gate, g in st.gates.items():
            # A deadline matters only while the gate is open; a closed gate says when it closed.
            when = f"deadline {ts(g.deadline)}" if g.state is GateState.OPEN else f"closed {ts(g.closed_at)}"
            lines.append(
                f"  {gate.value:<9} {g.state.value:<9} {g.approvals}/{g.required} approvals"
                f"  {when}  eligible {','.join(safe(e) for e in g.eligible) or '-'}"
            )
            lines += [f"    {approval_text(a)}" for a in g.votes]
    if st.stages:
        acceptance = st.plan.acceptance if st.plan else None
        lines.append("stages:")
        for s in st.stages:
            verdict = s.verdict.value if s.verdict else "-"
            note = f"  {safe(s.note)}" if s.note else ""
            when = f"{ts(s.started_at)} → {ts(s.ended_at)}"
            lines.append(f"  {safe(s.name):<12} {s.percent:>5g}%  {verdict:<8} {when}{note}")
            if s.health is not None:
                lines.append(f"    health  {health_text(s.health, acceptance)}")
            lines += [f"    {approval_text(a, marginal=True)}" for a in s.decisions]
    if st.window_waits:
        lines.append("windows:")
        for w in st.window_waits:
            lines += window_wait_lines(w)
    if st.deploys:
        lines.append("deploys:")
        lines += [
            f"  {ts(d.at)}  {d.environment.value:<10} {safe(d.version)}"
            + (f" (was {safe(d.previous_version)})" if d.previous_version else "")
            for d in st.deploys
        ]
    if st.compensations:
        lines.append("compensations: " + ", ".join(safe(c) for c in st.compensations))
    if st.issues:
        lines.append("issues:")
        lines += [f"  - {safe(i)}" for i in st.issues]
    if st.needs_operator:
        lines.append("NEEDS OPERATOR: a compensation kept failing")
    if st.refusals or st.refused:
        lines.append("refusals (latest first):")
        lines += [f"  {refusal_text(f)}" for f in reversed(st.refusals)]
        if st.refused > len(st.refusals):
            lines.append(f"  {st.refused} refused in all")
    if st.feedback:
        lines.append("feedback: " + ", ".join(f"{safe(f.by)} {f.rating}/5" for f in st.feedback))
    if st.kpis:
        lines.append("kpis: " + ", ".join(f"{safe(k)}={v:g}" for k, v in sorted(st.kpis.items())))
    lines.append("timeline:")
    lines += [f"  {ts(h.at)}  {h.phase.value:<24} {safe(h.note)}".rstrip() for h in st.history]
    if steps:
        now = datetime.now(UTC)
        lines.append("running:")
        lines += [f"  {safe(describe_step(step, now))}" for step in steps]
    return "\n".join(lines)


def plan_lines(plan: ReleasePlan, *, backout: bool = True) -> list[str]:
    """The content a plan vote binds to: stages with bake times, acceptance, backout, window."""
    lines = [
        f"  stage       {safe(s.name):<12} {s.percent:>5g}%  bake {duration(s.bake_seconds)}"
        + (f"  allow-list {len(s.allow_list)}" if s.allow_list else "")
        for s in plan.stages
    ]
    a = plan.acceptance
    lines.append(
        f"  acceptance  min_pass_rate {a.min_pass_rate:g}, max_error_rate {a.max_error_rate:g}, "
        f"max_latency_ms {a.max_latency_ms:g}"
    )
    if len(plan.components) > 1:
        lines.append(
            "  components  " + ", ".join(f"{safe(c.name)} {safe(c.version)}" for c in plan.components)
        )
    if plan.target_window is not None:
        lines.append(f"  window      {ts(plan.target_window.start)} → {ts(plan.target_window.end)}")
    if backout:
        # A backout plan may hold several lines; the bar keeps each one visibly inside it.
        text = plan.backout_plan.splitlines() or ["-"]
        lines += [f"  {'backout' if i == 0 else '':<11} | {safe(line)}" for i, line in enumerate(text)]
    return lines


def amendment_lines(a: AmendmentRecord) -> list[str]:
    """Who amended the plan last, when, why, and what changed (as the workflow recorded it)."""
    m = a.amendment
    lines = [
        f"  amended     to revision {m.plan.revision} by {safe(m.by)} ({key_text(m.proof)}) at {ts(a.at)}: "
        f"{safe(m.reason)}"
    ]
    lines += [f"              - {safe(c)}" for c in a.changes] or ["              - no visible change"]
    return lines


def approval_text(a: Approval, *, marginal: bool = False) -> str:
    """One recorded vote: when, what, who with their key, for whom by which delegation, comment."""
    v = a.vote
    if marginal:
        decision = "accepted" if v.decision is Decision.APPROVE else "rejected"
    else:
        decision = v.decision.value
    who = f"{safe(v.approver)} ({key_text(v.proof)})"
    if v.on_behalf_of:
        granted = key_text(v.delegation.proof) if v.delegation else "no delegation"
        who += f" for {safe(v.on_behalf_of)} (delegated, {granted})"
    note = f": {safe(v.comment)}" if v.comment else ""
    return f"{ts(a.at)}  {decision:<8} {who}{note}"


def key_text(proof: Proof | None) -> str:
    if proof is None:
        return "unsigned"
    return f"key {proof.key_id}" + (f" via {safe(proof.provider)}" if proof.provider else "")


def health_text(h: HealthReport, acceptance: AcceptanceCriteria | None = None) -> str:
    """A health report against the acceptance criteria, as an approver of a marginal stage reads it."""
    parts = [h.verdict.value]
    if h.error_rate is not None:
        limit = f" (max {acceptance.max_error_rate * 100:.3g}%)" if acceptance else ""
        parts.append(f"error rate {h.error_rate * 100:.3g}%{limit}")
    if h.latency_ms is not None:
        limit = f" (max {acceptance.max_latency_ms:g} ms)" if acceptance else ""
        parts.append(f"latency {h.latency_ms:.0f} ms{limit}")
    parts.append(f"{h.samples} samples")
    return ", ".join(parts) + (f": {safe(h.detail)}" if h.detail else "")


def window_wait_lines(w: WindowWait) -> list[str]:
    step = "go-live" if w.step == GO_LIVE else f"stage {safe(w.step)}"
    until = f"until {ts(w.until)}" if w.until else "still waiting"
    reason = f": {safe(w.reason)}" if w.reason else ""
    lines = [f"  {step} held by {window_name(w.window)} since {ts(w.since)}, {until}{reason}"]
    if w.override is not None:
        o = w.override
        lines.append(f"    overridden by {safe(o.by)} ({key_text(o.proof)}): {safe(o.reason)}")
    return lines


def window_name(name: str | None) -> str:
    return f"window '{safe(name)}'" if name else "an unnamed window"


def refusal_text(f: Refusal) -> str:
    return f"{ts(f.at)}  {safe(f.actor)}  {safe(f.action)}: {safe(f.reason)}"


def duration(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


async def follow_release(
    client: ReleaseClient,
    release_id: str,
    emit: Callable[[str], None],
    *,
    prefix: str = "",
    interval: float = 0.5,
    until: Callable[[ReleaseStatus], bool] | None = None,
) -> ReleaseStatus:
    """Print each new timeline entry, what the release waits for, refusals and its long steps
    until it ends."""
    seen = 0
    refused = 0
    awaiting: list[str] = []
    ticker = StepTicker()
    while True:
        st, steps = await client.progress(release_id)
        for h in st.history[seen:]:
            emit(f"{prefix}{ts(h.at)}  {h.phase.value:<24} {safe(h.note)}".rstrip())
        seen = len(st.history)
        # Only the latest refusals are kept: a burst between two polls shows its tail.
        fresh = st.refusals[len(st.refusals) - min(st.refused - refused, len(st.refusals)) :]
        for f in fresh:
            emit(f"{prefix}{ts(f.at)}  refused: {safe(f.actor)} {safe(f.action)}: {safe(f.reason)}")
        refused = st.refused
        if st.awaiting != awaiting and st.outcome is None:
            awaiting = list(st.awaiting)
            if awaiting:
                emit(f"{prefix}{'':20}  waiting for {', '.join(safe(a) for a in awaiting)}")
        if st.outcome is not None or (until is not None and until(st)):
            return st
        for line in ticker.lines(steps, datetime.now(UTC)):
            emit(f"{prefix}{'':20}  {safe(line)}")
        await asyncio.sleep(interval)


@app.command("list")
def list_releases(
    phase: Annotated[Phase | None, typer.Option(help="Only releases in this phase.")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    awaiting: Annotated[str | None, typer.Option(help="Only running releases waiting on this user.")] = None,
    running: Annotated[bool, typer.Option("--running", help="Only running releases.")] = False,
    outcome: Annotated[
        Outcome | None, typer.Option(help="Only closed releases that ended so (e.g. rolled_back).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find releases through their search attributes (what the Temporal UI filters on).

    STATUS is how a closed release ended (its outcome), else Temporal's execution status.
    """
    found = with_client(
        lambda c: c.list(
            phase=phase,
            service=service,
            awaiting=awaiting,
            running=True if running else None,
            outcome=outcome,
        )
    )
    if as_json:
        echo_json(found)
        return
    if not found:
        typer.echo("no releases found")
        return
    typer.echo(format_table(found))


def format_table(found: list[ReleaseSummary]) -> str:
    rows: list[tuple[str, ...]] = [
        ("RELEASE", "SERVICE", "VERSION", "PHASE", "RISK", "AWAITING", "STATUS", "STARTED")
    ]
    rows += [
        tuple(
            safe(cell)
            for cell in (
                s.release_id,
                s.service,
                s.version,
                s.phase,
                s.risk or "-",
                ",".join(s.awaiting) or "-",
                s.outcome or s.status.lower(),
                ts(s.started_at),
            )
        )
        for s in found
    ]
    return table(rows)


async def _validate(model: type[BaseModel], **fields: Any) -> None:
    build(model, **fields)


def check(**fields: tuple[Any, object]) -> None:
    """Refuse a bad value before connecting anywhere, named like the contract field it goes to."""
    for name, (kind, value) in fields.items():
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as exc:
            raise fail(f"{name}: {str(exc.errors()[0]['msg']).removeprefix('Value error, ')}") from None


def _operator_command(verb: OperatorVerb, doc: str) -> None:
    def command(release_id: ReleaseIdArg, user: UserOpt, reason: ReasonOpt) -> None:
        # Refuse a bad name or an empty reason before connecting anywhere.
        run(lambda: _validate(OperatorAction, action=verb, by=user, reason=reason))
        result = with_client(lambda c: c.operate(release_id, verb, user, reason))
        typer.echo(operator_answer(verb, release_id, user, result))

    command.__doc__ = doc
    app.command(verb.value)(command)


_operator_command(OperatorVerb.PAUSE, "Hold the release before its next step until `resume` (operators).")
_operator_command(OperatorVerb.RESUME, "Continue a paused release (operators).")
_operator_command(OperatorVerb.PROMOTE, "Skip the rest of the current bake or review period (operators).")
_operator_command(
    OperatorVerb.ABORT, "Compensate everything done so far and end the release as aborted (operators)."
)


@app.command("override-window")
def override_window(
    release_id: ReleaseIdArg,
    user: UserOpt,
    reason: ReasonOpt,
    window: Annotated[
        str | None, typer.Option(help="The closed window to pass (default: the one the release waits on).")
    ] = None,
    step: Annotated[
        str | None,
        typer.Option(help="The step it lets through: a stage or go-live (default: the waiting one)."),
    ] = None,
) -> None:
    """Let the waiting step through the closed window that holds it (change managers; recorded)."""
    verb = OperatorVerb.OVERRIDE_WINDOW
    # The release names the window and step it waits on only once asked; until then stand-ins
    # let the name, the reason and whatever window/step was given be checked offline.
    run(
        lambda: _validate(
            OperatorAction, action=verb, by=user, reason=reason, window=window or "-", step=step or GO_LIVE
        )
    )
    result = with_client(lambda c: c.override_window(release_id, user, reason, window=window, step=step))
    typer.echo(operator_answer(verb, release_id, user, result))


def operator_answer(verb: OperatorVerb, release_id: str, user: str, result: ActionResult) -> str:
    """One line saying what the accepted action does to the release."""
    rid, by = safe(release_id), safe(user)
    if verb is OperatorVerb.PAUSE:
        return f"pause: {rid} paused by {by}; it holds before its next step until `relman resume`"
    if verb is OperatorVerb.RESUME:
        return f"resume: {rid} resumed by {by} (phase {result.phase.value})"
    if verb is OperatorVerb.ABORT:
        return f"abort: {rid} aborted by {by}; compensations run, then it ends as aborted"
    if verb is OperatorVerb.PROMOTE:
        if result.phase is Phase.REVIEWING:
            what = "the review period"
        elif result.baking:
            what = f"the bake of stage {safe(result.baking)}"
        else:
            what = f"the current wait (phase {result.phase.value})"
        return f"promote: {what} of {rid} cut short by {by}"
    done = result.record.action
    step = "go-live" if done.step == GO_LIVE else f"stage {safe(done.step or '-')}"
    return f"override-window: {step} of {rid} let through {window_name(done.window)} by {by}"


@app.command("amend-plan")
def amend_plan(
    release_id: ReleaseIdArg,
    plan_file: Annotated[
        Path,
        typer.Argument(
            help="YAML with the plan fields that change (stages, acceptance, backout_plan, components); "
            "the rest stays as it is.",
            show_default=False,
        ),
    ],
    user: UserOpt,
    reason: ReasonOpt,
    as_json: JsonOpt = False,
) -> None:
    """Amend the plan while the plan gate is open (release managers); earlier plan votes stop counting."""
    check(by=(UserName, user), reason=(Reason, reason))

    async def go(c: ReleaseClient) -> tuple[ReleasePlan, ReleaseStatus]:
        before = await c.status(release_id)
        if before.plan is None:
            raise RefusedError(f"{release_id} has no plan yet (phase {before.phase.value})")
        plan = load_plan(plan_file, before.plan)
        if plan == before.plan:
            raise RelmanError(f"plan {plan_file} changes nothing in revision {plan.revision} of the plan")
        amended = await c.amend_plan(release_id, user, plan, reason)
        return amended, await c.status(release_id)

    plan, after = with_client(go)
    plan_hash = plan.content_hash()
    record = next((a for a in reversed(after.amendments) if a.plan_hash == plan_hash), None)
    changes = record.changes if record else []
    if as_json:
        echo_json({"plan": plan, "plan_hash": plan_hash, "changes": changes})
        return
    typer.echo(f"plan amended to revision {plan.revision}, hash {short(plan_hash)}")
    typer.echo("\n".join(f"  - {safe(c)}" for c in changes) or "  - no visible change")
    g = after.gates.get(Gate.PLAN)
    if g is not None:
        typer.echo(f"plan gate {g.state.value}: {g.approvals}/{g.required} approvals for the new hash")


@app.command()
def feedback(
    release_id: ReleaseIdArg,
    user: UserOpt,
    rating: Annotated[int, typer.Option(min=1, max=5, help="1 (bad) to 5 (great).")],
    comment: Annotated[str, typer.Option(help="What went well or badly.")] = "",
) -> None:
    """Give feedback during the review period."""
    run(lambda: _validate(Feedback, by=user, rating=rating, comment=comment))
    with_client(lambda c: c.feedback(release_id, user, rating, comment))
    typer.echo(f"feedback sent to {safe(release_id)}")
