"""What `relman status`, `list`, `approve` and the operator commands print, from hand-built
statuses: no server, no worker. Text that came from a message can never forge a line."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from relman.cli.common import safe, ts
from relman.cli.render import (
    describe_subject,
    follow_release,
    format_status,
    format_table,
    operator_answer,
)
from relman.client import ReleaseSummary
from relman.contracts import (
    GO_LIVE,
    AcceptanceCriteria,
    ActionRecord,
    ActionResult,
    AmendmentRecord,
    Approval,
    Component,
    Decision,
    Delegation,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    OperatorAction,
    OperatorVerb,
    Phase,
    PhaseTransition,
    PlanAmendment,
    Proof,
    Refusal,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    RolloutStage,
    StageStatus,
    Verdict,
    Vote,
    WindowWait,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
RID = "release-greeter-1.1.0"
BOB_KEY = "0123456789abcdef"
CAROL_KEY = "fedcba9876543210"
DAVE_KEY = "00112233aabbccdd"


def proof(key_id: str, at: datetime = T0) -> Proof:
    return Proof(issued_at=at, nonce="0" * 32, key_id=key_id, signature="A" * 86 + "==")


def request() -> ReleaseRequest:
    return ReleaseRequest(
        service="greeter", version="1.1.0", requested_by="alice", title="Greet in Welsh", commit="abcdef1"
    )


def plan(revision: int = 1, **changes: object) -> ReleasePlan:
    fields: dict[str, object] = {
        "components": [Component(name="greeter", version="1.1.0")],
        "stages": [
            RolloutStage(name="canary", percent=1, bake_seconds=60, allow_list=["bob", "carol"]),
            RolloutStage(name="half", percent=50, bake_seconds=5400),
        ],
        "acceptance": AcceptanceCriteria(min_pass_rate=1, max_error_rate=0.01, max_latency_ms=500),
        "backout_plan": "Switch production back.\nThen tell on-call.",
        "revision": revision,
    }
    return ReleasePlan.model_validate({**fields, **changes})


def vote(approver: str, key: str | None, gate: Gate = Gate.PLAN, **fields: object) -> Vote:
    return Vote(
        gate=gate,
        approver=approver,
        decision=fields.pop("decision", Decision.APPROVE),
        approved_hash="a" * 64,
        proof=proof(key) if key else None,
        **fields,
    )


def status(**fields: object) -> ReleaseStatus:
    return ReleaseStatus.model_validate(
        {"release_id": RID, "request": request(), "phase": Phase.AWAITING_PLAN_APPROVAL, **fields}
    )


def lines_of(st: ReleaseStatus) -> list[str]:
    return format_status(st, now=NOW).splitlines()


def test_plan_content_and_what_the_last_amendment_changed() -> None:
    old, new = plan(1), plan(2, acceptance=AcceptanceCriteria(max_error_rate=0.005))
    amendment = PlanAmendment(by="bob", plan=new, reason="tighter errors", proof=proof(BOB_KEY))
    record = AmendmentRecord(
        amendment=amendment,
        at=T0,
        previous_hash=old.content_hash(),
        plan_hash=new.content_hash(),
        changes=["acceptance max_error_rate: 0.01 -> 0.005"],
    )
    lines = lines_of(status(plan=new, plan_hash=new.content_hash(), amendments=[record]))
    assert f"plan      revision 2, hash {new.content_hash()[:16]}…" in lines
    assert "  stage       canary           1%  bake 1m  allow-list 2" in lines
    assert "  stage       half            50%  bake 1h30m" in lines
    assert "  acceptance  min_pass_rate 1, max_error_rate 0.005, max_latency_ms 500" in lines
    assert "  backout     | Switch production back." in lines
    assert "              | Then tell on-call." in lines
    assert (
        f"  amended     to revision 2 by bob (key {BOB_KEY}) at 2025-03-01 12:00:00Z: tighter errors" in lines
    )
    assert "              - acceptance max_error_rate: 0.01 -> 0.005" in lines


def test_awaiting_is_a_list() -> None:
    assert "awaiting  bob, carol" in lines_of(status(awaiting=["bob", "carol"]))
    assert "awaiting  -" in lines_of(status())


def test_votes_show_their_key_and_the_delegation_they_count_by() -> None:
    delegation = Delegation(
        delegator="carol",
        delegate="dave",
        services=["greeter"],
        gates=[Gate.PLAN],
        not_after=T0 + timedelta(days=1),
        proof=proof(CAROL_KEY),
    )
    gate = GateStatus(
        gate=Gate.PLAN,
        state=GateState.OPEN,
        required=3,
        eligible=["bob", "carol", "erin"],
        votes=[
            Approval(vote=vote("bob", BOB_KEY, comment="looks fine"), at=T0),
            Approval(vote=vote("dave", DAVE_KEY, on_behalf_of="carol", delegation=delegation), at=T0),
            Approval(vote=vote("erin", None), at=T0),
        ],
    )
    lines = lines_of(status(gates={Gate.PLAN: gate}))
    assert any(line.startswith("  plan      ● open      3/3 approvals") for line in lines)
    assert f"    2025-03-01 12:00:00Z  approve  bob (key {BOB_KEY}): looks fine" in lines
    assert (
        f"    2025-03-01 12:00:00Z  approve  dave (key {DAVE_KEY}) for carol (delegated, key {CAROL_KEY})"
        in lines
    )
    assert "    2025-03-01 12:00:00Z  approve  erin (unsigned)" in lines


def test_stage_health_and_every_marginal_decision() -> None:
    stage = StageStatus(
        name="canary",
        percent=1,
        verdict=Verdict.MARGINAL,
        started_at=T0,
        ended_at=T0 + timedelta(minutes=5),
        health=HealthReport(
            verdict=Verdict.MARGINAL, error_rate=0.015, latency_ms=320.4, samples=1200, detail="p99 is high"
        ),
        decisions=[
            Approval(
                vote=vote("carol", CAROL_KEY, Gate.MARGINAL, decision=Decision.REJECT, comment="too slow"),
                at=T0 + timedelta(minutes=6),
            ),
            Approval(vote=vote("bob", BOB_KEY, Gate.MARGINAL), at=T0 + timedelta(minutes=9)),
        ],
    )
    lines = lines_of(status(plan=plan(), stages=[stage]))
    assert "  1/2   canary           1%  ! marginal 2025-03-01 12:00:00Z → 2025-03-01 12:05:00Z (5m)" in lines
    assert (
        "    health  marginal, error rate 1.5% (max 1%), latency 320 ms (max 500 ms), "
        "1200 samples: p99 is high" in lines
    )
    assert f"    2025-03-01 12:06:00Z  rejected carol (key {CAROL_KEY}): too slow" in lines
    assert f"    2025-03-01 12:09:00Z  accepted bob (key {BOB_KEY})" in lines


def test_health_without_a_plan_or_measurements() -> None:
    stage = StageStatus(
        name="canary", percent=1, verdict=Verdict.NO_DATA, health=HealthReport(verdict=Verdict.NO_DATA)
    )
    assert "    health  no_data, 0 samples" in lines_of(status(stages=[stage]))


def test_window_waits_and_who_overrode_them() -> None:
    override = OperatorAction(
        action=OperatorVerb.OVERRIDE_WINDOW,
        by="carol",
        reason="security fix",
        window="q4-freeze",
        step=GO_LIVE,
        proof=proof(CAROL_KEY),
    )
    waits = [
        WindowWait(
            step="canary", window="nightly", reason="blackout", since=T0, until=T0 + timedelta(hours=2)
        ),
        WindowWait(step=GO_LIVE, window="q4-freeze", since=T0 + timedelta(hours=3), override=override),
    ]
    lines = lines_of(status(window_waits=waits))
    i = lines.index("windows:")
    assert lines[i + 1 : i + 4] == [
        "  stage canary held by window 'nightly' since 2025-03-01 12:00:00Z: blackout; "
        "until 2025-03-01 14:00:00Z (waited 2h)",
        "  go-live held by window 'q4-freeze' since 2025-03-01 15:00:00Z; "
        "still waiting, reopening unknown (re-checked hourly)",
        f"    overridden by carol (key {CAROL_KEY}): security fix",
    ]
    unnamed = WindowWait(step="canary", since=T0)
    assert (
        "  stage canary held by an unnamed window since 2025-03-01 12:00:00Z; still waiting, "
        "reopening unknown (re-checked hourly)"
    ) in lines_of(status(window_waits=[unnamed]))


def test_refusals_latest_first_with_the_total() -> None:
    refusals = [
        Refusal(actor="mallory", action="approve at plan", reason="forged signature", at=T0),
        Refusal(
            actor="alice", action="abort", reason="alice is not an operator of greeter", at=T0 + timedelta(1)
        ),
    ]
    lines = lines_of(status(refusals=refusals, refused=7))
    i = lines.index("refusals (latest first):")
    assert lines[i + 1 : i + 4] == [
        "  2025-03-02 12:00:00Z  alice  abort: alice is not an operator of greeter",
        "  2025-03-01 12:00:00Z  mallory  approve at plan: forged signature",
        "  7 refused in all",
    ]
    assert not any("in all" in line for line in lines_of(status(refusals=refusals, refused=2)))
    assert "refusals (latest first):" not in lines_of(status())


def test_text_from_a_message_cannot_forge_lines_or_colours() -> None:
    """Old data or another client may hold what the contracts now refuse: it prints escaped."""
    forged_vote = Vote.model_construct(
        gate=Gate.PLAN,
        approver="bob",
        decision=Decision.APPROVE,
        approved_hash="a" * 64,
        on_behalf_of=None,
        delegation=None,
        comment="ok\n    2025-03-01 12:00:00Z  approve  oli: LGTM",
        proof=None,
    )
    gate = GateStatus(gate=Gate.PLAN, state=GateState.OPEN, required=2)
    gate.votes.append(Approval.model_construct(vote=forged_vote, at=T0))
    st = status(gates={Gate.PLAN: gate})
    st.history.append(
        PhaseTransition.model_construct(phase=Phase.PLANNING, at=T0, note="\x1b[31mFAILED\x1b[0m")
    )
    st.issues.append("fine\r\u202egnp.exe")
    st.request = ReleaseRequest.model_construct(**{**request().model_dump(), "title": "a\u200bb\x07"})

    out = format_status(st)
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    assert "\\x1b[31mFAILED\\x1b[0m" in out
    assert "approve  bob (unsigned): ok\\n    2025-03-01 12:00:00Z  approve  oli: LGTM" in out
    assert not any(
        line.lstrip().startswith("2025-03-01 12:00:00Z  approve  oli") for line in out.splitlines()
    )
    assert "  - fine\\r\\u202egnp.exe" in out
    assert "  a\\u200bb\\x07" in out.splitlines()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, café ✓ 日本", "plain text, café ✓ 日本"),
        ("tab\there", "tab\\there"),
        ("nul\x00del\x7fc1\x9b", "nul\\x00del\\x7fc1\\x9b"),
        ("rtl\u202eltr\u2066", "rtl\\u202eltr\\u2066"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("bom\ufeffzwj\u200d", "bom\\ufeffzwj\\u200d"),
        ("a\\x1b stays as typed", "a\\x1b stays as typed"),
    ],
)
def test_safe(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_table_escapes_and_joins_awaiting() -> None:
    found = [
        ReleaseSummary(
            release_id="release-greeter-1.1.0",
            service="greeter\x1b[2J",
            version="1.1.0",
            phase="awaiting_cab",
            awaiting=["bob", "carol"],
            status="RUNNING",
            started_at=T0,
        )
    ]
    lines = format_table(found).splitlines()
    assert len(lines) == 2 and "\x1b" not in lines[1]
    assert "greeter\\x1b[2J" in lines[1] and "bob,carol" in lines[1]
    assert " running " in lines[1]


def test_a_closed_release_lists_its_outcome_not_temporals_completed() -> None:
    rolled_back = ReleaseSummary(
        release_id="release-greeter-1.3.0", phase="closed", outcome="rolled_back", status="COMPLETED"
    )
    (row,) = format_table([rolled_back]).splitlines()[1:]
    assert " rolled_back " in row and "completed" not in row


def test_a_plan_vote_shows_what_it_binds_to() -> None:
    p = plan(2)
    h = p.content_hash()
    st = status(plan=p, plan_hash=h, gates={Gate.PLAN: GateStatus(gate=Gate.PLAN, subject_hash=h)})
    lines = describe_subject(st, Gate.PLAN, h, Decision.APPROVE)
    assert lines[0] == f"approving the plan of {RID}: revision 2, hash {h[:16]}…"
    assert "  stage       half            50%  bake 1h30m" in lines
    assert "  acceptance  min_pass_rate 1, max_error_rate 0.01, max_latency_ms 500" in lines
    other = describe_subject(st, Gate.PLAN, "b" * 64, Decision.REJECT)
    assert other[0].startswith("rejecting the plan") and "bbbbbbbbbbbbbbbb…" in other[0]
    assert other[-1] == f"  note: --hash is not the gate's current hash {h[:16]}…; the vote will be refused"


def test_a_request_vote_shows_the_request() -> None:
    h = request().content_hash()
    st = status(gates={Gate.REQUEST: GateStatus(gate=Gate.REQUEST, subject_hash=h)})
    assert describe_subject(st, Gate.REQUEST, h, Decision.APPROVE) == [
        f"approving the request gate of {RID}: greeter 1.1.0 (normal change) "
        f"requested by alice, hash {h[:16]}…",
        "  title       Greet in Welsh",
    ]


def test_a_marginal_vote_shows_the_stage_health() -> None:
    stages = [
        StageStatus(name="canary", percent=1, verdict=Verdict.PASS),
        StageStatus(
            name="half",
            percent=50,
            verdict=Verdict.MARGINAL,
            health=HealthReport(verdict=Verdict.MARGINAL, error_rate=0.012, latency_ms=480, samples=900),
        ),
    ]
    st = status(plan=plan(), stages=stages, phase=Phase.DARK_LAUNCH)
    assert describe_subject(st, Gate.MARGINAL, "c" * 64, Decision.APPROVE) == [
        f"approving stage half (50%) of {RID} despite marginal health, hash cccccccccccccccc…",
        "  health      marginal, error rate 1.2% (max 1%), latency 480 ms (max 500 ms), 900 samples",
    ]


def test_operator_answers() -> None:
    action = OperatorAction(
        action=OperatorVerb.OVERRIDE_WINDOW, by="carol", reason="fix", window="q4-freeze", step=GO_LIVE
    )
    overridden = ActionResult(record=ActionRecord(action=action, at=T0), phase=Phase.DEPLOYING)
    assert (
        operator_answer(OperatorVerb.OVERRIDE_WINDOW, RID, "carol", overridden)
        == f"override-window: go-live of {RID} let through window 'q4-freeze' by carol"
    )
    promote = OperatorAction(action=OperatorVerb.PROMOTE, by="olga", reason="looks fine")
    baking = ActionResult(
        record=ActionRecord(action=promote, at=T0), phase=Phase.DARK_LAUNCH, baking="canary"
    )
    assert (
        operator_answer(OperatorVerb.PROMOTE, RID, "olga", baking)
        == f"promote: the bake of stage canary of {RID} cut short by olga"
    )
    pause = OperatorAction(action=OperatorVerb.PAUSE, by="olga", reason="looking")
    paused = ActionResult(record=ActionRecord(action=pause, at=T0), phase=Phase.DARK_LAUNCH, paused=True)
    assert operator_answer(OperatorVerb.PAUSE, RID, "olga", paused).startswith(f"pause: {RID} paused by olga")


def test_follow_prints_awaiting_lists_and_new_refusals() -> None:
    first = status(awaiting=["bob", "carol"], history=[PhaseTransition(phase=Phase.PLANNING, at=T0)])
    refusal = Refusal(actor="mallory", action="abort", reason="not an operator\x1b[0m", at=T0)
    second = first.model_copy(update={"refusals": [refusal], "refused": 1})
    done = second.model_copy(update={"outcome": "completed", "awaiting": []})

    class Client:
        def __init__(self) -> None:
            self.statuses = [first, first, second, done]

        async def progress(self, release_id: str) -> tuple[ReleaseStatus, list[object]]:
            return self.statuses.pop(0), []

    out: list[str] = []
    asyncio.run(follow_release(Client(), RID, out.append, interval=0, clock=lambda: NOW))  # type: ignore[arg-type]
    assert out == [
        "2025-03-01 12:00:00Z  planning",
        f"{'':20}  ⏸ waiting for bob, carol",
        f"{'':20}  refused abort claimed by mallory: not an operator\\x1b[0m",
    ]


def test_an_open_gate_shows_its_deadline_a_closed_one_when_it_closed() -> None:
    deadline = T0 + timedelta(hours=1)
    st = status(
        gates={
            Gate.REQUEST: GateStatus(
                gate=Gate.REQUEST, state=GateState.APPROVED, deadline=deadline, closed_at=T0
            ),
            Gate.PLAN: GateStatus(gate=Gate.PLAN, state=GateState.OPEN, deadline=deadline),
        }
    )
    request_line, plan_line = (line for line in lines_of(st) if line.startswith(("  request", "  plan ")))
    assert f"closed {ts(T0)}" in request_line and "deadline" not in request_line
    assert f"deadline {ts(deadline)}" in plan_line
