"""`relman status` and `relman list` as people read them: colour only on a terminal (never with
NO_COLOR), relative times, per-phase durations, stage n/m, every stage's verdict, a window
wait's kind and reopening, and a clear banner when no worker answered. Hand-built statuses:
no server, no worker."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from relman.cli.render import (
    PLAIN,
    Paint,
    color_wanted,
    format_status,
    format_table,
    print_list,
    print_status,
    relative,
    span,
    wait_text,
)
from relman.client import ReleaseSummary
from relman.contracts import (
    GO_LIVE,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    Outcome,
    Phase,
    PhaseTransition,
    ReleasePlan,
    ReleaseRequest,
    ReleaseStatus,
    RolloutStage,
    StageStatus,
    StatusSource,
    Verdict,
    WindowKind,
    WindowWait,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
RID = "release-greeter-1.1.0"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BOX = set("│─┃━┌┐└┘├┤┬┴┼╭╮╰╯═║")


def request() -> ReleaseRequest:
    return ReleaseRequest(
        service="greeter", version="1.1.0", requested_by="alice", title="Greet in Welsh", commit="abcdef1"
    )


def plan() -> ReleasePlan:
    return ReleasePlan.model_validate(
        {
            "components": [{"name": "greeter", "version": "1.1.0"}],
            "stages": [
                RolloutStage(name="allow", percent=0, bake_seconds=60, allow_list=["bob"]),
                RolloutStage(name="canary", percent=1, bake_seconds=60),
                RolloutStage(name="five", percent=5, bake_seconds=60),
                RolloutStage(name="quarter", percent=25, bake_seconds=60),
            ],
        }
    )


def history(*phases: tuple[Phase, timedelta]) -> list[PhaseTransition]:
    return [PhaseTransition(phase=p, at=T0 + after) for p, after in phases]


def status(**fields: object) -> ReleaseStatus:
    return ReleaseStatus.model_validate({"release_id": RID, "request": request(), **fields})


def dark_launch(**fields: object) -> ReleaseStatus:
    """A release in its second of four stages, with a timeline since T0."""
    return status(
        phase=Phase.DARK_LAUNCH,
        plan=plan(),
        history=history(
            (Phase.REQUESTED, timedelta(0)),
            (Phase.AWAITING_CAB, timedelta(seconds=2)),
            (Phase.BUILDING, timedelta(minutes=40)),
            (Phase.TESTING, timedelta(minutes=41, seconds=30)),
            (Phase.DARK_LAUNCH, timedelta(hours=1)),
            (Phase.DARK_LAUNCH, timedelta(hours=1, minutes=5)),
        ),
        stages=[
            StageStatus(
                name="allow",
                percent=0,
                verdict=Verdict.PASS,
                started_at=T0 + timedelta(hours=1),
                ended_at=T0 + timedelta(hours=1, minutes=2),
            ),
            StageStatus(name="canary", percent=1, started_at=T0 + timedelta(hours=2, minutes=50)),
        ],
        **fields,
    )


def closed(outcome: Outcome, **fields: object) -> ReleaseStatus:
    return status(
        phase=Phase.CLOSED,
        outcome=outcome,
        history=history((Phase.REQUESTED, timedelta(0)), (Phase.CLOSED, timedelta(hours=1, minutes=3))),
        **fields,
    )


def line_starting(text: str, prefix: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return line


# --- colour, and plain text off a terminal -------------------------------------------------


def test_colour_is_only_added_the_text_is_the_same() -> None:
    st = dark_launch(gates={Gate.PLAN: GateStatus(gate=Gate.PLAN, state=GateState.APPROVED, closed_at=T0)})
    for each in (st, closed(Outcome.ROLLED_BACK), closed(Outcome.COMPLETED)):
        plain = format_status(each, now=NOW)
        coloured = format_status(each, now=NOW, paint=Paint(True))
        assert "\x1b" not in plain
        assert "\x1b[" in coloured
        assert ANSI.sub("", coloured) == plain


def test_outcome_colours() -> None:
    def outcome_line(outcome: Outcome) -> str:
        return line_starting(format_status(closed(outcome), now=NOW, paint=Paint(True)), "outcome")

    assert "\x1b[32m✓ completed" in outcome_line(Outcome.COMPLETED)
    assert "\x1b[31m✗ rolled_back" in outcome_line(Outcome.ROLLED_BACK)
    for yellow in (Outcome.REJECTED, Outcome.EXPIRED, Outcome.ABORTED):
        assert f"\x1b[33m✗ {yellow.value}" in outcome_line(yellow)
    needs = closed(Outcome.ROLLED_BACK, needs_operator=True)
    assert "\x1b[1;31m✗ needs operator" in line_starting(
        format_status(needs, now=NOW, paint=Paint(True)), "outcome"
    )


def test_no_colour_off_a_terminal_or_with_no_color(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    st = closed(Outcome.ROLLED_BACK)
    found = [ReleaseSummary(release_id=RID, outcome="rolled_back", status="COMPLETED", started_at=T0)]

    assert not color_wanted()  # pytest's stdout is no terminal
    print_status(st)
    print_list(found)
    out = capsys.readouterr().out
    assert "✗ rolled_back" in out and "\x1b" not in out and not BOX & set(out)

    # A terminal (forced, as a CI log may be) is coloured...
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert color_wanted()
    print_status(st)
    print_list(found)
    assert capsys.readouterr().out.count("\x1b[") > 2

    # ...unless NO_COLOR says otherwise.
    monkeypatch.setenv("NO_COLOR", "1")
    assert not color_wanted()
    print_status(st)
    print_list(found)
    out = capsys.readouterr().out
    assert "✗ rolled_back" in out and "\x1b" not in out


# --- times -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (850, "14m 10s"), (240, "4m"), (7200, "2h"), (7500, "2h 5m"), (273600, "3d 4h")],
)
def test_span(seconds: int, text: str) -> None:
    assert span(seconds) == text
    assert span(timedelta(seconds=-seconds)) == text


def test_relative() -> None:
    assert relative(NOW + timedelta(minutes=4), NOW) == "in 4m"
    assert relative(NOW - timedelta(hours=2), NOW) == "2h ago"
    assert relative(NOW, NOW) == "now"


def test_a_closed_release_says_when_it_closed_and_how_long_it_took() -> None:
    text = format_status(closed(Outcome.COMPLETED, reason="all good"), now=NOW)
    assert (
        line_starting(text, "outcome") == "outcome   ✓ completed  (all good)  closed 1h 57m ago, took 1h 3m"
    )
    assert line_starting(text, "phase") == "phase     closed"


def test_the_timeline_says_how_long_each_phase_took() -> None:
    text = format_status(dark_launch(), now=NOW).splitlines()
    timeline = text[text.index("timeline:") + 1 :]
    assert timeline == [
        "  2025-03-01 12:00:00Z  requested                      2s",
        "  2025-03-01 12:00:02Z  awaiting_cab              39m 58s",
        "  2025-03-01 12:40:00Z  building                   1m 30s",
        "  2025-03-01 12:41:30Z  testing                   18m 30s",
        "  2025-03-01 13:00:00Z  dark_launch                   2h…",
        "  2025-03-01 13:05:00Z  dark_launch",
    ]


def test_an_open_gate_counts_down_a_closed_one_says_when() -> None:
    st = status(
        phase=Phase.AWAITING_PLAN_APPROVAL,
        awaiting=["bob", "carol"],
        gates={
            Gate.REQUEST: GateStatus(
                gate=Gate.REQUEST, state=GateState.APPROVED, required=2, closed_at=NOW - timedelta(hours=2)
            ),
            Gate.PLAN: GateStatus(
                gate=Gate.PLAN,
                state=GateState.OPEN,
                required=2,
                eligible=["bob", "carol", "erin"],
                deadline=NOW + timedelta(minutes=14, seconds=10),
            ),
        },
    )
    text = format_status(st, now=NOW)
    assert line_starting(text, "  request") == (
        "  request   ✓ approved  0/2 approvals  closed 2025-03-01 13:00:00Z (2h ago)  eligible -"
    )
    assert "deadline 2025-03-01 15:14:10Z (expires in 14m 10s)" in line_starting(text, "  plan ")
    assert line_starting(text, "waiting") == (
        "waiting   plan gate waits for bob, carol (0/2 approvals), "
        "deadline 2025-03-01 15:14:10Z, expires in 14m 10s"
    )
    late = format_status(st, now=NOW + timedelta(minutes=15))
    assert "deadline passed 50s ago" in line_starting(late, "waiting")


# --- stages --------------------------------------------------------------------------------


def test_the_dark_launch_says_stage_n_of_m() -> None:
    text = format_status(dark_launch(), now=NOW)
    assert line_starting(text, "phase") == "phase     ● dark_launch for 2h, stage 2/4 canary (1%)"
    assert "  1/4   allow            0%  ✓ pass     " in text
    assert (
        "  2/4   canary           1%  ● baking   2025-03-01 14:50:00Z → now (10m so far)" in text.splitlines()
    )
    paused = format_status(dark_launch(paused=True), now=NOW)
    assert line_starting(paused, "phase").startswith("phase     ⏸ dark_launch for 2h, stage 2/4")


def test_every_stage_shows_its_verdict_failed_ones_included() -> None:
    failed = StageStatus(
        name="canary",
        percent=1,
        verdict=Verdict.FAIL,
        started_at=T0,
        ended_at=T0 + timedelta(minutes=3),
        health=HealthReport(verdict=Verdict.FAIL, error_rate=0.2, samples=40, detail="5xx spike"),
    )
    # An older workflow ended a stage without a verdict: the health report it was judged on shows.
    unrecorded = failed.model_copy(update={"name": "five", "percent": 5, "verdict": None})
    never = StageStatus(name="quarter", percent=25, started_at=T0)
    st = closed(Outcome.ROLLED_BACK, plan=plan(), stages=[failed, unrecorded, never])
    lines = format_status(st, now=NOW).splitlines()
    stages = lines[lines.index("stages:") + 1 :]
    assert stages[:5] == [
        "  1/4   canary           1%  ✗ fail     2025-03-01 12:00:00Z → 2025-03-01 12:03:00Z (3m)",
        "    health  fail, error rate 20% (max 1%), 40 samples: 5xx spike",
        "  2/4   five             5%  ✗ fail     2025-03-01 12:00:00Z → 2025-03-01 12:03:00Z (3m)",
        "    health  fail, error rate 20% (max 1%), 40 samples: 5xx spike",
        "  3/4   quarter         25%  - not judged 2025-03-01 12:00:00Z → -",
    ]


# --- windows -------------------------------------------------------------------------------


def test_a_window_wait_shows_name_kind_reason_and_reopening() -> None:
    wait = WindowWait(
        step=GO_LIVE,
        window="q4-freeze",
        kind=WindowKind.FREEZE,
        reason="quarter end",
        since=NOW - timedelta(minutes=30),
        reopens=NOW + timedelta(hours=3, minutes=2),
    )
    st = status(phase=Phase.DEPLOYING, awaiting=["window"], window_waits=[wait])
    lines = format_status(st, now=NOW).splitlines()
    assert lines[lines.index("windows:") + 1] == (
        "  go-live held by freeze window 'q4-freeze' since 2025-03-01 14:30:00Z: quarter end; "
        "still waiting, reopens 2025-03-01 18:02:00Z (in 3h 2m)"
    )
    assert line_starting("\n".join(lines), "waiting") == (
        "waiting   go-live waits for freeze window 'q4-freeze' (quarter end), "
        "reopens 2025-03-01 18:02:00Z (in 3h 2m)"
    )
    unknown = wait.model_copy(update={"reopens": None, "kind": None, "step": "canary"})
    assert wait_text(status(phase=Phase.DARK_LAUNCH, awaiting=["window"], window_waits=[unknown]), NOW) == (
        "stage canary waits for window 'q4-freeze' (quarter end), reopening unknown (re-checked hourly)"
    )
    done = wait.model_copy(update={"until": NOW})
    lines = format_status(status(window_waits=[done]), now=NOW).splitlines()
    assert lines[lines.index("windows:") + 1].endswith("quarter end; until 2025-03-01 15:00:00Z (waited 30m)")


def test_list_shows_outcomes_relative_times_and_what_window_means() -> None:
    found = [
        ReleaseSummary(
            release_id="release-greeter-1.2.0",
            service="greeter",
            version="1.2.0",
            phase="deploying",
            awaiting=["window"],
            status="RUNNING",
            started_at=NOW - timedelta(minutes=20),
        ),
        ReleaseSummary(
            release_id=RID,
            service="greeter",
            version="1.1.0",
            phase="closed",
            outcome="completed",
            status="COMPLETED",
            started_at=NOW - timedelta(hours=5),
            closed_at=NOW - timedelta(hours=2),
        ),
    ]
    lines = format_table(found, now=NOW).splitlines()
    assert lines[0].split() == [
        "RELEASE",
        "SERVICE",
        "VERSION",
        "PHASE",
        "RISK",
        "AWAITING",
        "STATUS",
        "STARTED",
        "ENDED",
    ]
    assert lines[1].split() == [
        "release-greeter-1.2.0",
        "greeter",
        "1.2.0",
        "deploying",
        "-",
        "window",
        "⏸",
        "running",
        "20m",
        "ago",
        "-",
    ]
    assert lines[2].split() == f"{RID} greeter 1.1.0 closed - - ✓ completed 5h ago 2h ago".split()
    assert lines[3].startswith("window: waiting for a deployment window; `relman status RELEASE` shows")
    assert "window:" not in format_table(found[1:], now=NOW)


# --- status without a worker ---------------------------------------------------------------


def test_a_status_rebuilt_from_records_says_so_first() -> None:
    rebuilt = format_status(dark_launch(source=StatusSource.RECORDS), now=NOW).splitlines()
    assert rebuilt[:2] == [
        "! no worker answered: this status was rebuilt from the server's records and the CMDB;",
        "! votes, stages and running steps may be missing.",
    ]
    assert rebuilt[2].startswith(f"{RID}: greeter 1.1.0")
    live = format_status(dark_launch(), now=NOW)
    assert live.startswith(f"{RID}: greeter 1.1.0") and "no worker answered" not in live
    assert "no worker answered" in format_status(dark_launch(source=StatusSource.RECORDS), paint=PLAIN)


def test_a_window_rechecked_and_still_closed_is_still_the_one_waited_for() -> None:
    """The workflow sets `until` at each re-check; while it awaits `window` the wait is open."""
    wait = WindowWait(
        step="canary",
        window="nightly",
        kind=WindowKind.BLACKOUT,
        since=NOW - timedelta(hours=2),
        until=NOW - timedelta(hours=1),
        reopens=NOW + timedelta(minutes=40),
    )
    st = status(phase=Phase.DARK_LAUNCH, awaiting=["window"], window_waits=[wait])
    lines = format_status(st, now=NOW).splitlines()
    assert lines[lines.index("windows:") + 1].endswith("still waiting, reopens 2025-03-01 15:40:00Z (in 40m)")
    assert wait_text(st, NOW) == (
        "stage canary waits for blackout window 'nightly', reopens 2025-03-01 15:40:00Z (in 40m)"
    )
    moved_on = st.model_copy(update={"awaiting": []})
    assert wait_text(moved_on, NOW) == ""
    assert "until 2025-03-01 14:00:00Z (waited 1h)" in format_status(moved_on, now=NOW)


def test_a_stage_at_the_marginal_gate_shows_the_verdict_it_asks_about() -> None:
    st = dark_launch()
    asking = st.stages[-1].model_copy(
        update={"health": HealthReport(verdict=Verdict.MARGINAL, error_rate=0.009, samples=80)}
    )
    gate = GateStatus(gate=Gate.MARGINAL, state=GateState.OPEN, required=1, subject_hash="ab" * 32)
    st = st.model_copy(update={"stages": [st.stages[0], asking], "gates": {Gate.MARGINAL: gate}})
    line = line_starting(format_status(st, now=NOW), "  2/4")
    assert "marginal?" in line and "baking" not in line
