"""The follow loop `status --follow`, `start --follow` and the demo share: what a waiting gate
or window shows (who, deadline, countdown), how often, and stage verdicts in order. A fake
client hands it hand-built statuses and a fake clock says when each poll happens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from relman.cli.render import Follower, follow_release
from relman.contracts import (
    GO_LIVE,
    Approval,
    Decision,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    Outcome,
    Phase,
    PhaseTransition,
    ReleaseRequest,
    ReleaseStatus,
    StageStatus,
    StatusSource,
    Verdict,
    Vote,
    WindowKind,
    WindowWait,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RID = "release-greeter-1.1.0"
INDENT = " " * 22


def status(**fields: object) -> ReleaseStatus:
    request = ReleaseRequest(
        service="greeter", version="1.1.0", requested_by="alice", title="Greet in Welsh", commit="abcdef1"
    )
    return ReleaseStatus.model_validate({"release_id": RID, "request": request, **fields})


class Polls:
    """A client whose `progress` returns the statuses in turn, and the clock that goes with them."""

    def __init__(self, *polls: tuple[timedelta, ReleaseStatus]) -> None:
        self.polls = list(polls)
        self.now = T0

    async def progress(self, release_id: str) -> tuple[ReleaseStatus, list[object]]:
        after, st = self.polls.pop(0)
        self.now = T0 + after
        return st, []

    def clock(self) -> datetime:
        return self.now


def follow(polls: Polls, **options: object) -> list[str]:
    out: list[str] = []
    asyncio.run(
        follow_release(
            polls,  # type: ignore[arg-type]
            RID,
            out.append,
            interval=0,
            clock=polls.clock,
            **options,  # type: ignore[arg-type]
        )
    )
    return out


def plan_gate(*voters: str) -> GateStatus:
    return GateStatus(
        gate=Gate.PLAN,
        state=GateState.OPEN,
        required=2,
        eligible=["bob", "carol", "erin"],
        deadline=T0 + timedelta(minutes=15),
        votes=[
            Approval(
                vote=Vote(gate=Gate.PLAN, approver=v, decision=Decision.APPROVE, approved_hash="a" * 64),
                at=T0,
            )
            for v in voters
        ],
    )


def waiting_for(*awaiting: str, voters: tuple[str, ...] = ()) -> ReleaseStatus:
    return status(
        phase=Phase.AWAITING_PLAN_APPROVAL,
        awaiting=list(awaiting),
        gates={Gate.PLAN: plan_gate(*voters)},
        history=[PhaseTransition(phase=Phase.AWAITING_PLAN_APPROVAL, at=T0)],
    )


def test_a_waiting_gate_shows_who_its_deadline_and_a_countdown_at_most_once_a_minute() -> None:
    waiting = waiting_for("bob", "carol", "erin")
    voted = waiting_for("carol", "erin", voters=("bob",))
    done = voted.model_copy(update={"outcome": Outcome.EXPIRED, "awaiting": []})
    out = follow(
        Polls(
            (timedelta(seconds=50), waiting),
            (timedelta(seconds=80), waiting),  # 30 s later: nothing new
            (timedelta(seconds=111), waiting),  # 61 s later: the countdown
            (timedelta(seconds=112), voted),  # a vote: at once
            (timedelta(seconds=113), voted),
            (timedelta(minutes=16), done),
        )
    )
    assert out == [
        "2025-03-01 12:00:00Z  awaiting_plan_approval",
        f"{INDENT}⏸ plan gate waits for bob, carol, erin (0/2 approvals), "
        "deadline 2025-03-01 12:15:00Z, expires in 14m 10s",
        f"{INDENT}⏸ plan gate waits for bob, carol, erin (0/2 approvals), "
        "deadline 2025-03-01 12:15:00Z, expires in 13m 9s",
        f"{INDENT}⏸ plan gate waits for carol, erin (1/2 approvals), "
        "deadline 2025-03-01 12:15:00Z, expires in 13m 8s",
    ]


def test_on_a_terminal_the_countdown_is_shown_on_every_poll() -> None:
    waiting = waiting_for("bob")
    done = waiting.model_copy(update={"outcome": Outcome.COMPLETED, "awaiting": []})
    shown: list[str] = []
    out = follow(
        Polls(
            (timedelta(seconds=0), waiting),
            (timedelta(seconds=1), waiting),
            (timedelta(seconds=2), waiting),
            (timedelta(seconds=3), done),
        ),
        show=shown.append,
    )
    assert [line for line in out if "plan gate" in line] == [
        f"{INDENT}⏸ plan gate waits for bob (0/2 approvals), deadline 2025-03-01 12:15:00Z, expires in 15m"
    ]
    assert [s.rsplit(", ", 1)[-1] for s in shown[:3]] == [
        "expires in 15m",
        "expires in 14m 59s",
        "expires in 14m 58s",
    ]
    assert shown[-1] == ""


def test_a_window_wait_counts_down_to_its_reopening() -> None:
    wait = WindowWait(
        step=GO_LIVE,
        window="nightly",
        kind=WindowKind.BLACKOUT,
        reason="backups",
        since=T0,
        reopens=T0 + timedelta(hours=2),
    )
    held = status(phase=Phase.DEPLOYING, awaiting=["window"], window_waits=[wait])
    through = held.model_copy(
        update={"awaiting": [], "window_waits": [wait.model_copy(update={"until": T0 + timedelta(hours=2)})]}
    )
    done = through.model_copy(update={"outcome": Outcome.COMPLETED})
    out = follow(
        Polls((timedelta(minutes=1), held), (timedelta(hours=2), through), (timedelta(hours=2), done))
    )
    assert out == [
        f"{INDENT}⏸ go-live waits for blackout window 'nightly' (backups), "
        "reopens 2025-03-01 14:00:00Z (in 1h 59m)"
    ]


def test_stage_verdicts_come_before_the_phase_they_lead_to_failed_ones_with_their_health() -> None:
    """The demo's form: compact times, a label, and each verdict once."""
    stages = [
        StageStatus(
            name="canary", percent=1, verdict=Verdict.PASS, started_at=T0, ended_at=T0 + timedelta(seconds=5)
        ),
        StageStatus(
            name="quarter",
            percent=25,
            verdict=Verdict.FAIL,
            started_at=T0 + timedelta(seconds=6),
            ended_at=T0 + timedelta(seconds=9),
            health=HealthReport(verdict=Verdict.FAIL, error_rate=0.3, samples=50, detail="5xx"),
        ),
    ]
    history = [
        PhaseTransition(phase=Phase.DARK_LAUNCH, at=T0),
        PhaseTransition(phase=Phase.COMPENSATING, at=T0 + timedelta(seconds=10)),
    ]
    st = status(phase=Phase.COMPENSATING, stages=stages, history=history)
    done = st.model_copy(update={"outcome": Outcome.ROLLED_BACK})
    follower = Follower(prefix="[bad ] ", compact=True)
    out = follow(Polls((timedelta(seconds=10), st), (timedelta(seconds=11), done)), follower=follower)
    assert out == [
        "[bad ] 12:00:00  dark_launch",
        "[bad ]           stage canary (1%): pass  [1/2]",
        "[bad ]           stage quarter (25%): fail (fail, error rate 30%, 50 samples: 5xx)  [2/2]",
        "[bad ] 12:00:10  compensating",
    ]


def test_an_act_hook_runs_after_each_poll_of_a_running_release() -> None:
    running = waiting_for("bob")
    done = running.model_copy(update={"outcome": Outcome.COMPLETED})
    seen: list[Phase] = []

    async def act(st: ReleaseStatus) -> None:
        seen.append(st.phase)

    hook: Callable[[ReleaseStatus], object] = act
    follow(
        Polls((timedelta(0), running), (timedelta(seconds=1), running), (timedelta(seconds=2), done)),
        act=hook,
    )
    assert seen == [Phase.AWAITING_PLAN_APPROVAL, Phase.AWAITING_PLAN_APPROVAL]


def test_follow_says_when_no_worker_answers_and_when_one_does_again() -> None:
    running = waiting_for()
    rebuilt = running.model_copy(update={"source": StatusSource.RECORDS})
    done = running.model_copy(update={"outcome": Outcome.COMPLETED})
    out = follow(
        Polls((timedelta(0), running), (timedelta(seconds=1), rebuilt), (timedelta(seconds=2), done))
    )
    assert out[2:] == [
        f"{INDENT}! no worker answers: following the server's records and the CMDB",
        f"{INDENT}a worker answers again",
    ]
