"""Release commands of the relman CLI: start, vote (approve, reject, delegate), amend-plan,
status, list, the operator controls and feedback. What they print is in `render`."""

from __future__ import annotations

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
    ts,
    with_client,
)
from relman.cli.keys import load_signer
from relman.cli.render import (
    describe_subject,
    follow_printed,
    operator_answer,
    print_list,
    print_status,
    vote_line,
)
from relman.cli.train_render import print_train_status
from relman.client import (
    GATE_ORDER,
    GATE_WAIT,
    TRANSIENT,
    ReleaseClient,
    build,
    load_any_manifest,
    load_plan,
    one_line,
)
from relman.config import load_settings
from relman.contracts import (
    GO_LIVE,
    Comment,
    Decision,
    Delegation,
    Feedback,
    Gate,
    GateState,
    GateStatus,
    OperatorAction,
    OperatorVerb,
    Outcome,
    Phase,
    Reason,
    ReleasePlan,
    ReleaseStatus,
    UserName,
)
from relman.contracts.train import TrainRequest
from relman.errors import RefusedError, RelmanError
from relman.identity.keys import Signer
from relman.identity.signing import seal

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
    """Start a release, or a train (a manifest listing `components:`), from a manifest; prints
    its id. The same release or train is never started twice."""
    try:
        request = load_any_manifest(manifest)
    except RelmanError as exc:
        raise fail(str(exc)) from None
    if isinstance(request, TrainRequest):
        train = request
        tid = with_client(lambda c: c.start_train(train, release_id))
        if as_json:
            echo_json({"train_id": tid, "components": {c.service: c.version for c in train.components}})
        else:
            typer.echo(tid)
        if follow:
            typer.echo(f"follow it with `relman status {tid}`; --follow of a train is not supported yet")
        return
    rid = with_client(lambda c: c.start(request, release_id))
    if as_json:
        echo_json({"release_id": rid, "service": request.service, "version": request.version})
    else:
        typer.echo(rid)
    if follow:
        final = with_client(lambda c: follow_printed(c, rid))
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
    """Phase, outcome, plan, gates with signed votes, stages with health, windows, refusals, timeline.

    For a train: its gates and its components by wave, each with its child workflows."""
    if with_client(lambda c: c.is_train(release_id)):
        train = with_client(lambda c: c.train_status(release_id))
        if as_json:
            echo_json(train)
        else:
            print_train_status(train)
        return
    if follow:
        with_client(lambda c: follow_printed(c, release_id))
    if as_json:
        echo_json(with_client(lambda c: c.status(release_id)))
        return
    st, steps = with_client(lambda c: c.progress(release_id))
    print_status(st, steps)


@app.command("list")
def list_releases(
    phase: Annotated[Phase | None, typer.Option(help="Only releases in this phase.")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    awaiting: Annotated[str | None, typer.Option(help="Only running releases waiting on this user.")] = None,
    running: Annotated[bool, typer.Option("--running", help="Only running releases.")] = False,
    outcome: Annotated[
        Outcome | None, typer.Option(help="Only closed releases that ended so (e.g. rolled_back).")
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="A train (its id) and its components' child workflows.")
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
            train=train,
        )
    )
    if as_json:
        echo_json(found)
        return
    if not found:
        typer.echo("no releases found")
        return
    print_list(found)


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
