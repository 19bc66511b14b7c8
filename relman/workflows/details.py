"""The markdown of a release's current details in the Temporal UI: pure functions of the status."""

from __future__ import annotations

from datetime import UTC, datetime

from relman.contracts import Conflict, GateStatus, HealthReport, ReleaseStatus, WindowWait
from relman.workflows import policy


def when(at: datetime | None) -> str:
    """A deadline as people read it: UTC to the minute."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "none"


HEALTH_LIMIT = 900
"""Characters of one health line: it is a gate's evidence, and a notification is one line of
at most 1000 characters with the gate's words around it."""


def health(report: HealthReport) -> str:
    """A health report as approvers read it, on one bounded line: the verdict, its figures,
    the canary judge's table (one `metric result xratio p` per metric, failures first), why."""
    figures = [f"health {report.verdict}", f"{report.samples} samples"]
    if report.error_rate is not None:
        figures.append(f"error rate {report.error_rate:.2%}")
    if report.latency_ms is not None:
        figures.append(f"latency {report.latency_ms:.0f} ms")
    text = ", ".join(figures)
    if report.canary is not None:
        text += "; " + report.canary.summary(HEALTH_LIMIT - len(text) - 2)
    if report.detail and len(text) + 20 < HEALTH_LIMIT:
        room = HEALTH_LIMIT - len(text) - 3
        detail = report.detail if len(report.detail) <= room else report.detail[: room - 3] + "..."
        text += f" ({detail})"
    return text


def window_wait(wait: WindowWait, next_check: datetime, what: str) -> str:
    """Which window holds the release, why, and when it opens again."""
    reopens = f"reopens {when(wait.reopens)}" if wait.reopens else "no reopening known"
    return (
        f"**waiting for {wait.kind or 'window'} {wait.window!r}** before {what}: {reopens} "
        f"(next check {when(next_check)}); {wait.reason}"
    )


def closed(status: ReleaseStatus) -> str:
    """A closed release: its outcome, why, and whether an operator must act."""
    text = f"**closed: {status.outcome}**" + (f" — {status.reason}" if status.reason else "")
    return text + ("\n\n**operator action required**" if status.needs_operator else "")


def conflict(c: Conflict) -> str:
    what = f"release {c.release_id}" if c.release_id else f"window {c.window!r}" if c.window else "conflict"
    where = f"{c.ci} ({c.via})" if c.via else c.ci
    return f"{what} on {where}" + (f": {c.detail}" if c.detail else "")


def conflicts(found: list[Conflict]) -> str:
    """Conflicts as the CAB and operators read them; empty when there are none."""
    if not found:
        return ""
    return "**conflicts**: " + "; ".join(conflict(c) for c in found)


def header(status: ReleaseStatus) -> str:
    request = status.request
    text = f"**{request.service} {request.version}** ({request.change_type}) — {status.phase}"
    return text + (" (paused)" if status.paused else "")


def gate(g: GateStatus) -> str:
    voters = ", ".join(f"{a.vote.approver} ({a.vote.decision})" for a in g.votes) or "none yet"
    return (
        f"gate **{g.gate}** {g.state}: {g.approvals}/{g.required} approvals; votes: {voters}; "
        f"waiting for: {', '.join(policy.waiting_for(g)) or '-'}; deadline {when(g.deadline)}; "
        f"hash {g.subject_hash[:12]}"
    )


def page(status: ReleaseStatus, text: str) -> str:
    lines = [header(status), "", text]
    if status.conflicts:
        lines += ["", conflicts(status.conflicts)]
    if status.refusals:
        last = status.refusals[-1]
        lines += ["", f"last refused: {last.action} by {last.actor}: {last.reason}"]
    return "\n".join(lines)
