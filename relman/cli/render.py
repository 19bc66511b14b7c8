"""What the release commands print: status, the list table, what a vote binds to, operator
answers, and the follow loop that `status --follow`, `start --follow` and the demo share.

Everything here is a pure function of contracts (and `now`), so it is tested without a
server. Colour and symbols come from `rich`: colour only on a terminal and never with
NO_COLOR; the text (symbols included) is the same either way, so plain output greps alike.
Every string that came from a message goes through `safe`: one line of output is one line.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import typer
from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.live import Live
from rich.style import Style
from rich.table import Table
from rich.text import Text

from relman.cli.common import safe, short, table, ts
from relman.contracts import (
    GO_LIVE,
    AcceptanceCriteria,
    ActionResult,
    AmendmentRecord,
    Approval,
    Decision,
    Gate,
    GateState,
    GateStatus,
    HealthReport,
    OperatorVerb,
    Outcome,
    Phase,
    Proof,
    Refusal,
    ReleasePlan,
    ReleaseStatus,
    StageStatus,
    StatusSource,
    Verdict,
    WindowWait,
)
from relman.progress import RunningStep, StepTicker, describe_step

if TYPE_CHECKING:
    from relman.client import ReleaseClient, ReleaseSummary

# --- colour and symbols ------------------------------------------------------------------

OUTCOME_LOOK: dict[str, tuple[str, str]] = {
    Outcome.COMPLETED: ("✓", "green"),
    Outcome.COMPLETED_WITH_ISSUES: ("✓", "yellow"),
    Outcome.ROLLED_BACK: ("✗", "red"),
    Outcome.REJECTED: ("✗", "yellow"),
    Outcome.EXPIRED: ("✗", "yellow"),
    Outcome.ABORTED: ("✗", "yellow"),
}
VERDICT_LOOK: dict[str, tuple[str, str]] = {
    Verdict.PASS: ("✓", "green"),
    Verdict.MARGINAL: ("!", "yellow"),
    Verdict.FAIL: ("✗", "red"),
    Verdict.NO_DATA: ("?", "yellow"),
}
GATE_LOOK: dict[str, tuple[str, str]] = {
    GateState.PENDING: ("○", "dim"),
    GateState.OPEN: ("●", "cyan"),
    GateState.APPROVED: ("✓", "green"),
    GateState.REJECTED: ("✗", "red"),
    GateState.EXPIRED: ("✗", "yellow"),
    GateState.SKIPPED: ("-", "dim"),
    GateState.WITHDRAWN: ("-", "dim"),
}
RUNNING = ("●", "cyan")
PAUSED = ("⏸", "yellow")
NEEDS_OPERATOR = ("✗", "bold red")
WAITING = "⏸"


def color_wanted(file: object = None) -> bool:
    """Colour on a terminal that has colours, unless NO_COLOR is set (rich reads both)."""
    console = Console(file=file or sys.stdout)  # type: ignore[arg-type]
    return console.is_terminal and not console.no_color and console.color_system is not None


@dataclass(frozen=True)
class Paint:
    """Wraps text in a rich style's ANSI codes, or leaves it as it is when colour is off."""

    color: bool = False

    def __call__(self, text: str, style: str) -> str:
        if not self.color or not style or not text:
            return text
        return Style.parse(style).render(text, color_system=ColorSystem.STANDARD)

    def look(self, look: tuple[str, str], text: str, width: int = 0) -> str:
        """`symbol text`, padded to `width` before it is coloured (colour codes take no room)."""
        symbol, style = look
        return self(f"{symbol} {text}".ljust(width), style)


PLAIN = Paint(False)

# --- times -------------------------------------------------------------------------------


def duration(seconds: int) -> str:
    """A configured length exactly, as the plan states it: `1h30m`, `45s`."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"


def span(delta: timedelta | float) -> str:
    """A length as people say it, its two largest units: `14m 10s`, `2h`, `3d 4h`."""
    seconds = int(abs(delta.total_seconds() if isinstance(delta, timedelta) else delta))
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n or parts:
            parts.append((n, unit))
    return " ".join(f"{n}{unit}" for n, unit in parts[:2] if n) or "0s"


def relative(at: datetime, now: datetime) -> str:
    """`in 4m` or `2h ago` (`now` within a second)."""
    delta = at - now
    if abs(delta) < timedelta(seconds=1):
        return "now"
    return f"in {span(delta)}" if delta > timedelta(0) else f"{span(delta)} ago"


def when(at: datetime | None, now: datetime) -> str:
    """An absolute time with its distance from now: `2025-03-01 12:00:00Z (2h ago)`."""
    return f"{ts(at)} ({relative(at, now)})" if at else "-"


# --- status ------------------------------------------------------------------------------

RECORDS_BANNER = [
    "! no worker answered: this status was rebuilt from the server's records and the CMDB;",
    "! votes, stages and running steps may be missing.",
]


def format_status(
    st: ReleaseStatus,
    steps: Sequence[RunningStep] = (),
    *,
    now: datetime | None = None,
    paint: Paint = PLAIN,
) -> str:
    """A release's status, and the steps it is running, as text for a terminal."""
    now = now or datetime.now(UTC)
    r = st.request
    lines: list[str] = []
    if st.source is StatusSource.RECORDS:
        lines += [paint(line, "bold yellow") for line in RECORDS_BANNER]
    lines += [
        f"{paint(safe(st.release_id), 'bold')}: {safe(r.service)} {safe(r.version)} "
        f"({r.change_type.value} change, risk {st.risk.value if st.risk else '-'}) "
        f"requested by {safe(r.requested_by)}",
        f"  {safe(r.title)}",
        f"phase     {phase_text(st, now, paint)}",
        f"outcome   {outcome_text(st, now, paint)}",
        f"awaiting  {', '.join(safe(a) for a in st.awaiting) or '-'}",
    ]
    waiting = wait_text(st, now)
    if waiting:
        lines.append(f"waiting   {paint(waiting, 'yellow')}")
    if st.needs_operator:
        lines.append(paint("NEEDS OPERATOR: a compensation kept failing", "bold red"))
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
        look = ("✓", "green") if st.tests.accepted else ("✗", "red")
        accepted = paint.look(look, "accepted" if st.tests.accepted else "not accepted")
        lines.append(f"tests     {accepted}  {suites}".rstrip())
    if st.gates:
        lines.append("gates:")
        for gate, g in st.gates.items():
            lines.append(gate_line(gate, g, now, paint))
            lines += [f"    {approval_text(a)}" for a in g.votes]
    if st.stages:
        lines.append("stages:")
        lines += stage_lines(st, now, paint)
    if st.window_waits:
        lines.append("windows:")
        holding = open_window_wait(st)
        for w in st.window_waits:
            lines += window_wait_lines(w, now, holding=w is holding)
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
    lines += timeline_lines(st, now)
    if steps:
        lines.append("running:")
        lines += [f"  {safe(describe_step(step, now))}" for step in steps]
    return "\n".join(lines)


def phase_text(st: ReleaseStatus, now: datetime, paint: Paint = PLAIN) -> str:
    """`● dark_launch for 3m 10s, stage 2/4 canary (1%)`; a closed release's phase alone."""
    if st.outcome is not None or st.phase is Phase.CLOSED:
        return st.phase.value
    text = paint.look(PAUSED if st.paused else RUNNING, st.phase.value)
    started = phase_started(st)
    if started is not None:
        text += f" for {span(now - started)}"
    progress = stage_progress(st)
    if progress:
        text += f", {progress}"
    return text + ("  (paused)" if st.paused else "")


def phase_started(st: ReleaseStatus) -> datetime | None:
    """When the current phase began: the first timeline entry of its last run."""
    started = None
    for h in reversed(st.history):
        if h.phase is not st.phase:
            break
        started = h.at
    return started


def stage_progress(st: ReleaseStatus) -> str:
    """`stage 2/4 canary (1%)` during the dark launch; empty before and after it."""
    if st.phase is not Phase.DARK_LAUNCH or not st.stages:
        return ""
    total = len(st.plan.stages) if st.plan else len(st.stages)
    s = st.stages[-1]
    return f"stage {len(st.stages)}/{max(total, len(st.stages))} {safe(s.name)} ({s.percent:g}%)"


def closed_at(st: ReleaseStatus) -> datetime | None:
    return st.history[-1].at if st.outcome is not None and st.history else None


def outcome_text(st: ReleaseStatus, now: datetime, paint: Paint = PLAIN) -> str:
    """`✗ rolled_back  (reason)  closed 2h ago, took 1h 3m`, coloured by how it ended."""
    if st.outcome is None:
        text = "-"
    else:
        text = paint.look(OUTCOME_LOOK.get(st.outcome, ("", "")), st.outcome.value).lstrip()
    if st.reason:
        text += f"  ({safe(st.reason)})"
    end = closed_at(st)
    if end is not None:
        text += f"  closed {relative(end, now)}"
        if st.history:
            text += f", took {span(end - st.history[0].at)}"
    if st.needs_operator:
        text += "  " + paint.look(NEEDS_OPERATOR, "needs operator")
    return text


def gate_line(gate: Gate, g: GateStatus, now: datetime, paint: Paint = PLAIN) -> str:
    """A gate's state and count; an open gate's deadline and countdown, a closed one's close."""
    # A deadline matters only while the gate is open; a closed gate says when it closed.
    if g.state is GateState.OPEN:
        moment = f"deadline {ts(g.deadline)}" + (f" ({expiry(g.deadline, now)})" if g.deadline else "")
    elif g.state is GateState.PENDING:
        moment = "not open yet"
    else:
        moment = f"closed {when(g.closed_at, now)}" if g.closed_at else "closed -"
    state = paint.look(GATE_LOOK.get(g.state, ("", "")), g.state.value, 11)
    return (
        f"  {gate.value:<9} {state} {g.approvals}/{g.required} approvals"
        f"  {moment}  eligible {','.join(safe(e) for e in g.eligible) or '-'}"
    )


def expiry(deadline: datetime, now: datetime) -> str:
    return (
        f"expires {relative(deadline, now)}"
        if deadline > now
        else f"deadline passed {span(now - deadline)} ago"
    )


def stage_lines(st: ReleaseStatus, now: datetime, paint: Paint = PLAIN) -> list[str]:
    """Each stage as `n/m`, its verdict (failed ones too), its times, health and decisions."""
    acceptance = st.plan.acceptance if st.plan else None
    total = max(len(st.plan.stages) if st.plan else 0, len(st.stages))
    lines = []
    for i, s in enumerate(st.stages, 1):
        note = f"  {safe(s.note)}" if s.note else ""
        lines.append(
            f"  {f'{i}/{total}':<5} {safe(s.name):<12} {s.percent:>5g}%  "
            f"{stage_verdict(s, st, paint)} {stage_times(s, st, now)}{note}"
        )
        if s.health is not None:
            lines.append(f"    health  {health_text(s.health, acceptance)}")
            lines += canary_lines(s.health, "      ")
        lines += [f"    {approval_text(a, marginal=True)}" for a in s.decisions]
    return lines


def stage_verdict(s: StageStatus, st: ReleaseStatus, paint: Paint = PLAIN) -> str:
    """The stage's verdict; without one, the health verdict it was judged on, or `baking`."""
    width = 10
    if s.verdict is not None:
        return paint.look(VERDICT_LOOK[s.verdict], s.verdict.value, width)
    if s.ended_at is None and st.outcome is None:
        marginal = st.gates.get(Gate.MARGINAL)
        if s.health is not None and marginal is not None and marginal.state is GateState.OPEN:
            # Judged, but not by itself: the marginal gate decides (`marginal?`, `no_data?`).
            return paint.look(VERDICT_LOOK[s.health.verdict], f"{s.health.verdict.value}?", width)
        return paint.look(RUNNING, "baking", width)
    if s.health is not None:
        # The workflow ended the stage without recording a verdict: the health report's is
        # the one it was judged on.
        return paint.look(VERDICT_LOOK[s.health.verdict], s.health.verdict.value, width)
    return paint.look(("-", "dim"), "not judged", width)


def stage_times(s: StageStatus, st: ReleaseStatus, now: datetime) -> str:
    if s.started_at is None:
        return "-"
    if s.ended_at is not None:
        return f"{ts(s.started_at)} → {ts(s.ended_at)} ({span(s.ended_at - s.started_at)})"
    if st.outcome is None:
        return f"{ts(s.started_at)} → now ({span(now - s.started_at)} so far)"
    return f"{ts(s.started_at)} → -"


def timeline_lines(st: ReleaseStatus, now: datetime) -> list[str]:
    """The timeline; the first entry of each phase says how long the release spent in it."""
    lines = []
    for i, h in enumerate(st.history):
        took = ""
        if i == 0 or st.history[i - 1].phase is not h.phase:
            end = next((n.at for n in st.history[i + 1 :] if n.phase is not h.phase), None)
            if end is not None:
                took = span(end - h.at)
            elif st.outcome is None:
                took = f"{span(now - h.at)}…"
        lines.append(f"  {ts(h.at)}  {h.phase.value:<24} {took:>8}  {safe(h.note)}".rstrip())
    return lines


# --- the parts of a status that votes and follow reuse -------------------------------------


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


def canary_lines(h: HealthReport, indent: str) -> list[str]:
    """The canary judge's table, one row per metric, as approvers of a marginal stage read it."""
    if h.canary is None:
        return []
    return [indent + safe(line) for line in h.canary.table_text().splitlines()]


def step_name(step: str) -> str:
    return "go-live" if step == GO_LIVE else f"stage {safe(step)}"


def window_label(w: WindowWait) -> str:
    """`freeze window 'q4-freeze'`: the window's kind and name, as far as they are known."""
    kind = f"{w.kind.value} " if w.kind else ""
    return f"{kind}window '{safe(w.window)}'" if w.window else f"an unnamed {kind}window"


def window_name(name: str | None) -> str:
    return f"window '{safe(name)}'" if name else "an unnamed window"


def reopening(w: WindowWait, now: datetime) -> str:
    if w.reopens is None:
        return "reopening unknown (re-checked hourly)"
    return f"reopens {ts(w.reopens)} ({relative(w.reopens, now)})"


def window_wait_lines(w: WindowWait, now: datetime | None = None, *, holding: bool = False) -> list[str]:
    """A step held by a window: which (kind, name), why, since when, and when it reopens or
    how long it waited; who overrode it. `holding`: the wait the release is still in."""
    now = now or datetime.now(UTC)
    reason = f": {safe(w.reason)}" if w.reason else ""
    if w.until is not None and not holding:
        end = f"until {ts(w.until)} (waited {span(w.until - w.since)})"
    else:
        end = f"still waiting, {reopening(w, now)}"
    lines = [f"  {step_name(w.step)} held by {window_label(w)} since {ts(w.since)}{reason}; {end}"]
    if w.override is not None:
        o = w.override
        lines.append(f"    overridden by {safe(o.by)} ({key_text(o.proof)}): {safe(o.reason)}")
    return lines


def open_window_wait(st: ReleaseStatus) -> WindowWait | None:
    """The window wait still holding the release, if any. The workflow re-checks a closed
    window (hourly, or when it said it reopens) and sets `until` at each check, so while the
    release awaits `window` its last wait is the open one whatever its `until` says."""
    w = st.window_waits[-1] if st.window_waits else None
    if w is None or w.override is not None or st.outcome is not None:
        return None
    return w if "window" in st.awaiting or w.until is None else None


def wait_text(st: ReleaseStatus, now: datetime) -> str:
    """What a running release waits for now, with deadlines and countdowns; empty if nothing."""
    if st.outcome is not None:
        return ""
    parts = []
    covered: set[str] = set()
    for gate, g in st.gates.items():
        if g.state is not GateState.OPEN:
            continue
        voted = {a.vote.on_behalf_of or a.vote.approver for a in g.votes}
        who = [a for a in st.awaiting if a in g.eligible] or [e for e in g.eligible if e not in voted]
        covered.update(who)
        text = (
            f"{gate.value} gate waits for {', '.join(safe(w) for w in who) or 'nobody'} "
            f"({g.approvals}/{g.required} approvals)"
        )
        if g.deadline is not None:
            text += f", deadline {ts(g.deadline)}, {expiry(g.deadline, now)}"
        parts.append(text)
    window = open_window_wait(st)
    if "window" in st.awaiting or (window is not None and st.phase in (Phase.DARK_LAUNCH, Phase.DEPLOYING)):
        covered.add("window")
        if window is not None:
            reason = f" ({safe(window.reason)})" if window.reason else ""
            parts.append(
                f"{step_name(window.step)} waits for {window_label(window)}{reason}, {reopening(window, now)}"
            )
        else:
            parts.append("waits for a deployment window")
    rest = [a for a in st.awaiting if a not in covered]
    if rest:
        parts.append(f"waiting for {', '.join(safe(a) for a in rest)}")
    if st.paused:
        parts.append("paused until an operator resumes it")
    return "; ".join(parts)


def refusal_text(f: Refusal) -> str:
    return f"{ts(f.at)}  {safe(f.actor)}  {safe(f.action)}: {safe(f.reason)}"


# --- the list table ----------------------------------------------------------------------

LIST_HEADER = ("RELEASE", "SERVICE", "VERSION", "PHASE", "RISK", "AWAITING", "STATUS", "STARTED", "ENDED")


def list_rows(found: Sequence[ReleaseSummary], now: datetime) -> list[tuple[tuple[str, str], ...]]:
    """The rows of `relman list`, each cell with the style it is shown in on a terminal."""
    rows = []
    for s in found:
        if s.outcome:
            symbol, style = OUTCOME_LOOK.get(s.outcome, ("", ""))
            status = f"{symbol} {s.outcome}".lstrip()
        elif s.status.upper() == "RUNNING":
            symbol, style = (WAITING, "yellow") if s.awaiting else RUNNING
            status = f"{symbol} running"
        else:
            status, style = s.status.lower(), "red" if s.status.upper() in ("FAILED", "TERMINATED") else ""
        cells = (
            (s.release_id, "bold"),
            (s.service, ""),
            (s.version, ""),
            (s.phase, ""),
            (s.risk or "-", ""),
            (",".join(s.awaiting) or "-", "yellow" if s.awaiting else ""),
            (status, style),
            (relative(s.started_at, now) if s.started_at else "-", ""),
            (relative(s.closed_at, now) if s.closed_at else "-", ""),
        )
        rows.append(tuple((safe(text), style) for text, style in cells))
    return rows


LIST_WINDOW_NOTE = (
    "window: waiting for a deployment window; `relman status RELEASE` shows which and when it reopens"
)


def format_table(found: Sequence[ReleaseSummary], now: datetime | None = None) -> str:
    """`relman list` as plain aligned columns (for pipes, files and NO_COLOR)."""
    now = now or datetime.now(UTC)
    rows: list[tuple[str, ...]] = [LIST_HEADER]
    rows += [tuple(text for text, _ in row) for row in list_rows(found, now)]
    out = table(rows)
    if any("window" in s.awaiting for s in found):
        out += "\n" + LIST_WINDOW_NOTE
    return out


def list_table(found: Sequence[ReleaseSummary], now: datetime | None = None) -> Table:
    """`relman list` for a terminal: the same cells, coloured, in a rich table."""
    now = now or datetime.now(UTC)
    grid = Table(box=None, header_style="bold", pad_edge=False, caption_justify="left", expand=False)
    rows = list_rows(found, now)
    for i, name in enumerate(LIST_HEADER):
        widest = max(cell_len(cell) for cell in [name, *(row[i][0] for row in rows)])
        grid.add_column(name, no_wrap=True, min_width=widest)
    for row in rows:
        grid.add_row(*(Text(text, style=style) for text, style in row))
    if any("window" in s.awaiting for s in found):
        grid.caption = LIST_WINDOW_NOTE
        grid.caption_style = "dim"
    return grid


# --- votes and operator actions ------------------------------------------------------------


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
        stage = marginal_stage(st)
        where = f"stage {safe(stage.name)} ({stage.percent:g}%)" if stage else "a marginal stage"
        lines = [f"{doing} {where} of {rid} despite marginal health, hash {short(subject_hash)}"]
        if stage is not None and stage.health is not None:
            lines.append(
                f"  health      {health_text(stage.health, st.plan.acceptance if st.plan else None)}"
            )
            lines += canary_lines(stage.health, "    ")
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


def marginal_stage(st: ReleaseStatus) -> StageStatus | None:
    """The stage the open marginal gate decides: the latest one judged marginal."""
    marginal = [s for s in st.stages if s.verdict is Verdict.MARGINAL]
    return marginal[-1] if marginal else (st.stages[-1] if st.stages else None)


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
    through = window_name(done.window)
    return f"override-window: {step_name(done.step or '-')} of {rid} let through {through} by {by}"


# --- following a release -------------------------------------------------------------------


@dataclass
class Follower:
    """What is new in a release since the last poll, as lines: timeline entries and stage
    verdicts in the order they happened, refusals, what it waits for (with deadline and
    countdown), and its long-running steps.

    The wait line is printed when it changes and then, while it lasts, every `countdown`
    (None: never again; a live display shows `wait_text` itself on each poll).
    """

    prefix: str = ""
    compact: bool = False
    """Times as HH:MM:SS (the demo, which lasts minutes) instead of full UTC timestamps."""
    countdown: timedelta | None = timedelta(seconds=60)
    seen: int = 0
    refused: int = 0
    stages: set[str] = field(default_factory=set)
    wait_key: tuple[object, ...] = ()
    wait_shown_at: datetime | None = None
    source: StatusSource = StatusSource.WORKFLOW
    ticker: StepTicker = field(default_factory=StepTicker)

    @property
    def indent(self) -> str:
        return f"{self.prefix}{'':{8 if self.compact else 20}}  "

    def time(self, at: datetime) -> str:
        return f"{at.astimezone(UTC):%H:%M:%S}" if self.compact else ts(at)

    def lines(self, st: ReleaseStatus, steps: Sequence[RunningStep], now: datetime) -> list[str]:
        out = self.source_lines(st)
        # A verdict comes before the phase it leads to, even when one poll sees both.
        news: list[tuple[datetime, int, str]] = [
            (h.at, 1, f"{self.prefix}{self.time(h.at)}  {h.phase.value:<24} {safe(h.note)}".rstrip())
            for h in st.history[self.seen :]
        ]
        self.seen = len(st.history)
        total = max(len(st.plan.stages) if st.plan else 0, len(st.stages))
        for i, s in enumerate(st.stages, 1):
            verdict = s.verdict or (s.health.verdict if s.health and s.ended_at else None)
            if verdict is None or s.name in self.stages:
                continue
            self.stages.add(s.name)
            note = f" — {safe(s.note)}" if s.note else ""
            detail = f" ({health_text(s.health)})" if s.health and verdict is not Verdict.PASS else ""
            at = s.ended_at or s.started_at or now
            news.append(
                (
                    at,
                    0,
                    f"{self.indent}stage {safe(s.name)} ({s.percent:g}%): {verdict.value}{note}{detail}"
                    f"  [{i}/{total}]",
                )
            )
        out += [line for _, _, line in sorted(news, key=lambda n: (n[0], n[1]))]
        out += self.refusal_lines(st)
        out += self.wait_lines(st, now)
        if st.outcome is None:
            out += [f"{self.indent}{safe(line)}" for line in self.ticker.lines(list(steps), now)]
        return out

    def source_lines(self, st: ReleaseStatus) -> list[str]:
        """A line when the answers start or stop coming from records instead of a worker."""
        if st.source is self.source:
            return []
        self.source = st.source
        if st.source is StatusSource.RECORDS:
            return [f"{self.indent}! no worker answers: following the server's records and the CMDB"]
        return [f"{self.indent}a worker answers again"] if self.seen else []

    def refusal_lines(self, st: ReleaseStatus) -> list[str]:
        """Refusals not printed yet (the status keeps only the latest: a burst shows its tail)."""
        new = min(st.refused - self.refused, len(st.refusals))
        self.refused = max(self.refused, st.refused)
        return [
            f"{self.indent}refused {safe(f.action)} claimed by {safe(f.actor)}: {safe(f.reason)}"
            for f in (st.refusals[-new:] if new > 0 else [])
        ]

    def wait_lines(self, st: ReleaseStatus, now: datetime) -> list[str]:
        text = wait_text(st, now)
        gates = tuple((g, s.deadline, s.approvals) for g, s in st.gates.items() if s.state is GateState.OPEN)
        window = open_window_wait(st)
        key = (
            tuple(st.awaiting),
            gates,
            st.paused,
            window.window if window else None,
            window.reopens if window else None,
        )
        if not text:
            self.wait_key, self.wait_shown_at = key, None
            return []
        due = (
            self.countdown is not None
            and self.wait_shown_at is not None
            and now - self.wait_shown_at >= self.countdown
        )
        if key == self.wait_key and not due:
            return []
        self.wait_key, self.wait_shown_at = key, now
        return [f"{self.indent}{WAITING} {text}"]


async def follow_release(
    client: ReleaseClient,
    release_id: str,
    emit: Callable[[str], None],
    *,
    prefix: str = "",
    interval: float = 0.5,
    until: Callable[[ReleaseStatus], bool] | None = None,
    follower: Follower | None = None,
    show: Callable[[str], None] | None = None,
    act: Callable[[ReleaseStatus], Awaitable[None]] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReleaseStatus:
    """Print what is new in a release on every poll until it ends (or `until` holds).

    `show`: a live display, given the current wait with its countdown on every poll.
    `act`: called after each poll of a running release (the demo approves its gates there).
    """
    follower = follower or Follower(prefix=prefix, countdown=None if show else timedelta(seconds=60))
    while True:
        st, steps = await client.progress(release_id)
        now = clock()
        for line in follower.lines(st, steps, now):
            emit(line)
        if show is not None:
            waiting = wait_text(st, now)
            show(f"{WAITING} {waiting}" if waiting else "")
        if st.outcome is not None or (until is not None and until(st)):
            return st
        if act is not None:
            await act(st)
        await asyncio.sleep(interval)


def is_terminal() -> bool:
    """Stdout is a terminal that can redraw a line (for a live countdown)."""
    console = Console()
    return console.is_terminal and not console.is_dumb_terminal


async def follow_printed(client: ReleaseClient, release_id: str) -> ReleaseStatus:
    """`--follow` on stdout: on a terminal, new lines scroll and the current wait counts down
    in place (rich.live); otherwise plain lines, a countdown at most once a minute."""
    if not is_terminal():
        return await follow_release(client, release_id, emit=typer.echo)
    console = Console(highlight=False)
    with Live(Text(""), console=console, transient=True, auto_refresh=False) as live:

        def emit(line: str) -> None:
            live.console.print(Text(line), soft_wrap=True)

        def show(text: str) -> None:
            live.update(Text(text, style="yellow"), refresh=True)

        return await follow_release(client, release_id, emit=emit, show=show)


def print_status(st: ReleaseStatus, steps: Sequence[RunningStep] = ()) -> None:
    color = color_wanted()
    typer.echo(format_status(st, steps, paint=Paint(color)), color=color)


def print_list(found: Sequence[ReleaseSummary]) -> None:
    if not color_wanted():
        typer.echo(format_table(found))
        return
    now = datetime.now(UTC)
    grid = list_table(found, now)
    # As wide as the rows need: a narrow terminal wraps them, as it does plain text, rather
    # than rich cutting release ids short.
    needed = sum((c.min_width or 0) + 2 for c in grid.columns)
    console = Console(highlight=False)
    Console(highlight=False, width=max(console.width, needed)).print(grid)
