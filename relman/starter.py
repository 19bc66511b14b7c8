"""The `relman` CLI: start, approve/reject, status, list, operator controls, CMDB, dev server, demo."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from relman.cli.keys import keys_app
from relman.client import ReleaseClient, ReleaseSummary, build, load_manifest, one_line
from relman.contracts import (
    Environment,
    Feedback,
    GateStatus,
    OperatorAction,
    Phase,
    ReleaseStatus,
    WindowKind,
)
from relman.errors import RelmanError
from relman.progress import RunningStep, StepTicker, describe_step

T = TypeVar("T")

app = typer.Typer(
    name="relman",
    help="relman: durable ITIL release management on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cmdb_app = typer.Typer(
    help="Read the CMDB and declare deployment windows.", no_args_is_help=True, rich_markup_mode=None
)
window_app = typer.Typer(
    help="Deployment windows (blackout, maintenance, freeze).", no_args_is_help=True, rich_markup_mode=None
)
cmdb_app.add_typer(window_app, name="window")
app.add_typer(cmdb_app, name="cmdb")
app.add_typer(keys_app, name="keys")


class GateChoice(StrEnum):
    request = "request"
    plan = "plan"
    retro = "retro"
    marginal = "marginal"


# --- shared options and helpers ------------------------------------------

ReleaseIdArg = Annotated[str, typer.Argument(help="Release id, e.g. release-checkout-2.4.1.")]
UserOpt = Annotated[str, typer.Option("--as", help="Who you are (login).", show_default=False)]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded in the release history.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason to stderr; returns the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; user errors become a one-line message and exit code 1."""
    try:
        return asyncio.run(factory())
    except RelmanError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(one_line(exc)) from None


def with_client(fn: Callable[[ReleaseClient], Awaitable[T]]) -> T:
    async def go() -> T:
        return await fn(await ReleaseClient.connect())

    return run(go)


def echo_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
    else:
        typer.echo(json.dumps(_jsonable(value), indent=2, default=str))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def ts(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def parse_time(value: str, name: str) -> datetime:
    """ISO date or datetime; naive values are UTC."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date/time (e.g. 2025-06-01T22:00)", param_hint=name
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# --- releases --------------------------------------------------------------


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
    on_behalf_of: Annotated[str | None, typer.Option(help="CAB member you act for (delegation).")] = None,
    comment: Annotated[str, typer.Option(help="Comment recorded with the vote.")] = "",
    subject_hash: Annotated[
        str | None, typer.Option("--hash", help="Hash you approve (default: the gate's current one).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a gate (through the `decide` update: accepted, or refused with the reason)."""
    result = with_client(
        lambda c: c.approve(
            release_id,
            user,
            gate.value if gate else None,
            on_behalf_of=on_behalf_of,
            comment=comment,
            subject_hash=subject_hash,
        )
    )
    _print_vote(result, release_id, "approved", user, as_json)


@app.command()
def reject(
    release_id: ReleaseIdArg,
    user: UserOpt,
    reason: ReasonOpt,
    gate: Annotated[GateChoice | None, typer.Option(help="Gate to reject (default: the open one).")] = None,
    on_behalf_of: Annotated[str | None, typer.Option(help="CAB member you act for (delegation).")] = None,
    subject_hash: Annotated[str | None, typer.Option("--hash", help="Hash you reject.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject (veto) a gate, with a reason."""
    result = with_client(
        lambda c: c.reject(
            release_id,
            user,
            gate.value if gate else None,
            reason=reason,
            on_behalf_of=on_behalf_of,
            subject_hash=subject_hash,
        )
    )
    _print_vote(result, release_id, "rejected", user, as_json)


def _print_vote(g: GateStatus, release_id: str, verb: str, user: str, as_json: bool) -> None:
    if as_json:
        echo_json(g)
        return
    approvals = sum(1 for v in g.votes if v.vote.decision.value == "approve")
    typer.echo(
        f"{verb}: {g.gate.value} gate of {release_id} by {user}; "
        f"{approvals}/{g.required} approvals, gate {g.state.value}"
    )


@app.command()
def status(
    release_id: ReleaseIdArg,
    as_json: JsonOpt = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print phase changes until it ends.")
    ] = False,
) -> None:
    """Phase, outcome, gates with votes and deadlines, stages with verdicts, timeline."""
    if follow:
        with_client(lambda c: follow_release(c, release_id, emit=typer.echo))
    if as_json:
        echo_json(with_client(lambda c: c.status(release_id)))
        return
    st, steps = with_client(lambda c: c.progress(release_id))
    typer.echo(format_status(st, steps))


def format_status(st: ReleaseStatus, steps: Sequence[RunningStep] = ()) -> str:
    """A release's status, and the steps it is running, as text for a terminal."""
    r = st.request
    lines = [
        f"{st.release_id}: {r.service} {r.version} ({r.change_type.value} change, "
        f"risk {st.risk.value if st.risk else '-'}) requested by {r.requested_by}",
        f"  {r.title}",
        f"phase     {st.phase.value}{'  (paused)' if st.paused else ''}",
        f"outcome   {st.outcome.value if st.outcome else '-'}" + (f"  ({st.reason})" if st.reason else ""),
        f"awaiting  {st.awaiting or '-'}",
    ]
    if st.plan_hash:
        lines.append(f"plan      revision {st.plan.revision if st.plan else '?'}, hash {st.plan_hash[:16]}…")
    if st.package:
        lines.append(f"package   {st.package.digest[:16]}… ({len(st.package.artifacts)} artifact(s))")
    if st.gates:
        lines.append("gates:")
        for gate, g in st.gates.items():
            approvals = sum(1 for v in g.votes if v.vote.decision.value == "approve")
            lines.append(
                f"  {gate.value:<9} {g.state.value:<9} {approvals}/{g.required} approvals"
                f"  deadline {ts(g.deadline)}  eligible {','.join(g.eligible) or '-'}"
            )
            for a in g.votes:
                v = a.vote
                who = v.approver + (f" for {v.on_behalf_of}" if v.on_behalf_of else "")
                note = f": {v.comment}" if v.comment else ""
                lines.append(f"    {ts(a.at)}  {v.decision.value:<7} {who}{note}")
    if st.stages:
        lines.append("stages:")
        for s in st.stages:
            verdict = s.verdict.value if s.verdict else "-"
            note = f"  {s.note}" if s.note else ""
            lines.append(
                f"  {s.name:<12} {s.percent:>5g}%  {verdict:<8} {ts(s.started_at)} → {ts(s.ended_at)}{note}"
            )
    if st.compensations:
        lines.append("compensations: " + ", ".join(st.compensations))
    if st.issues:
        lines.append("issues:")
        lines += [f"  - {i}" for i in st.issues]
    if st.needs_operator:
        lines.append("NEEDS OPERATOR: a compensation kept failing")
    if st.feedback:
        lines.append("feedback: " + ", ".join(f"{f.by} {f.rating}/5" for f in st.feedback))
    if st.kpis:
        lines.append("kpis: " + ", ".join(f"{k}={v:g}" for k, v in sorted(st.kpis.items())))
    lines.append("timeline:")
    lines += [f"  {ts(h.at)}  {h.phase.value:<24} {h.note}" for h in st.history]
    if steps:
        now = datetime.now(UTC)
        lines.append("running:")
        lines += [f"  {describe_step(step, now)}" for step in steps]
    return "\n".join(lines)


async def follow_release(
    client: ReleaseClient,
    release_id: str,
    emit: Callable[[str], None],
    *,
    prefix: str = "",
    interval: float = 0.5,
    until: Callable[[ReleaseStatus], bool] | None = None,
) -> ReleaseStatus:
    """Print each new timeline entry, what the release waits for and its long steps until it ends."""
    seen = 0
    awaiting = ""
    ticker = StepTicker()
    while True:
        st, steps = await client.progress(release_id)
        for h in st.history[seen:]:
            emit(f"{prefix}{ts(h.at)}  {h.phase.value:<24} {h.note}".rstrip())
        seen = len(st.history)
        if st.awaiting != awaiting and st.outcome is None:
            awaiting = st.awaiting
            if awaiting:
                emit(f"{prefix}{'':20}  waiting for {awaiting}")
        if st.outcome is not None or (until is not None and until(st)):
            return st
        for line in ticker.lines(steps, datetime.now(UTC)):
            emit(f"{prefix}{'':20}  {line}")
        await asyncio.sleep(interval)


@app.command("list")
def list_releases(
    phase: Annotated[Phase | None, typer.Option(help="Only releases in this phase.")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    awaiting: Annotated[str | None, typer.Option(help="Only running releases waiting on this user.")] = None,
    running: Annotated[bool, typer.Option("--running", help="Only running releases.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find releases through their search attributes (what the Temporal UI filters on)."""
    found = with_client(
        lambda c: c.list(phase=phase, service=service, awaiting=awaiting, running=True if running else None)
    )
    if as_json:
        echo_json(found)
        return
    if not found:
        typer.echo("no releases found")
        return
    typer.echo(format_table(found))


def format_table(found: list[ReleaseSummary]) -> str:
    rows = [("RELEASE", "SERVICE", "VERSION", "PHASE", "RISK", "AWAITING", "STATUS", "STARTED")]
    rows += [
        (
            s.release_id,
            s.service,
            s.version,
            s.phase,
            s.risk or "-",
            ",".join(s.awaiting) or "-",
            s.status.lower(),
            ts(s.started_at),
        )
        for s in found
    ]
    return _table(rows)


async def _validate(model: type[BaseModel], **fields: Any) -> None:
    build(model, **fields)


def _operator_command(name: str, doc: str) -> None:
    def command(release_id: ReleaseIdArg, user: UserOpt, reason: ReasonOpt) -> None:
        method = name.replace("-", "_")
        # Refuse a bad name or an empty reason before connecting anywhere.
        run(lambda: _validate(OperatorAction, by=user, reason=reason))
        with_client(lambda c: getattr(c, method)(release_id, user, reason))
        typer.echo(f"{name} sent to {release_id}")

    command.__doc__ = doc
    app.command(name)(command)


_operator_command("pause", "Hold the release before its next step until `resume`.")
_operator_command("resume", "Continue a paused release.")
_operator_command("promote", "Skip the rest of the current bake (or review period).")
_operator_command("abort", "Compensate everything done so far and end the release as aborted.")
_operator_command("override-window", "Deploy now despite a closed deployment window (recorded).")


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
    typer.echo(f"feedback sent to {release_id}")


# --- CMDB ------------------------------------------------------------------


def _store() -> Any:
    from relman.cmdb import CmdbStore
    from relman.config import load_settings

    try:
        settings = load_settings()
    except RelmanError as exc:
        raise fail(str(exc)) from None
    return CmdbStore(settings.cmdb)


def cmdb_call(fn: Callable[[Any], T]) -> T:
    """Run a CMDB read/write; CMDB errors become a one-line message."""
    from relman.cmdb.errors import CmdbError

    store = _store()
    try:
        return fn(store)
    except CmdbError as exc:
        raise fail(f"CMDB: {exc}") from None
    except ValidationError as exc:
        raise fail(one_line(exc)) from None
    finally:
        store.close()


@app.command()
def metrics(
    since: Annotated[str | None, typer.Option(help="Start date (default: 30 days ago).")] = None,
    until: Annotated[str | None, typer.Option(help="End date (default: now).")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Draw the metrics over time to this PNG.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """DORA metrics from the CMDB: deployment frequency, lead time, change fail rate, recovery."""
    end = parse_time(until, "--until") if until else datetime.now(UTC)
    begin = parse_time(since, "--since") if since else end - timedelta(days=30)
    if begin >= end:
        raise fail("--since must be before --until")
    m = cmdb_call(lambda s: s.dora(begin, end, service))
    if plot is not None:
        draw_metrics(m, plot)
    if as_json:
        echo_json(m)
        return

    def fmt(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:.2f}{unit}"

    typer.echo(f"DORA metrics {ts(m.since)} → {ts(m.until)}" + (f" for {service}" if service else ""))
    typer.echo(f"  deployments              {m.deployments} of {m.attempts} attempts")
    typer.echo(f"  deployment frequency     {fmt(m.deployment_frequency_per_day, ' /day')}")
    typer.echo(f"  lead time (median)       {fmt(m.lead_time_hours, ' h')}")
    typer.echo(f"  change fail rate         {fmt(m.change_fail_rate)}")
    typer.echo(f"  recovery time (median)   {fmt(m.recovery_hours, ' h')}")
    typer.echo(f"  rework rate              {fmt(m.rework_rate)}")
    if plot is not None:
        typer.echo(f"plot written to {plot}")


def draw_metrics(m: Any, path: Path) -> None:
    """Deployments/failures per day and median lead time, as a PNG (Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d.day for d in m.series]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.bar(days, [d.deployments for d in m.series], label="deployments", color="tab:green")
    top.bar(days, [-d.failures for d in m.series], label="failures", color="tab:red")
    top.axhline(0, color="black", linewidth=0.5)
    top.set_ylabel("per day")
    top.legend(loc="upper left")
    top.set_title("relman DORA metrics" + (f" — {m.service}" if m.service else ""))
    lead = [(d.day, d.lead_time_hours) for d in m.series if d.lead_time_hours is not None]
    rec = [(d.day, d.recovery_hours) for d in m.series if d.recovery_hours is not None]
    if lead:
        bottom.plot(*zip(*lead, strict=True), marker="o", label="lead time (h)")
    if rec:
        bottom.plot(*zip(*rec, strict=True), marker="x", label="recovery (h)")
    bottom.set_ylabel("hours (median)")
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


@cmdb_app.command("cis")
def cmdb_cis(as_json: JsonOpt = False) -> None:
    """Configuration items with their current versions."""
    cis = cmdb_call(lambda s: s.list_cis())
    if as_json:
        echo_json(cis)
        return
    rows = [("CI", "CLASS", "ENV", "VERSION", "CRITICALITY", "OWNER")]
    rows += [
        (
            c.name,
            c.ci_class,
            c.environment or "-",
            c.current_version or "-",
            c.criticality.value,
            c.owner or "-",
        )
        for c in cis
    ]
    typer.echo(_table(rows) if cis else "no configuration items")


@cmdb_app.command("ci")
def cmdb_ci(name: Annotated[str, typer.Argument(help="CI name.")], as_json: JsonOpt = False) -> None:
    """One configuration item: attributes, relationships and version history."""

    def read(s: Any) -> dict[str, Any]:
        ci = s.get_ci(name)
        if ci is None:
            raise fail(f"no configuration item named {name}")
        return {"ci": ci, "relationships": s.relationships(name), "versions": s.ci_versions(name)}

    data = cmdb_call(read)
    if as_json:
        echo_json(data)
        return
    ci = data["ci"]
    typer.echo(f"{ci.name} ({ci.ci_class}, {ci.criticality.value}) version {ci.current_version or '-'}")
    if ci.description:
        typer.echo(f"  {ci.description}")
    typer.echo(f"  environment {ci.environment or '-'}, owner {ci.owner or '-'}, updated {ts(ci.updated_at)}")
    for r in data["relationships"]:
        typer.echo(f"  {r.parent} {r.label} {r.child}")
    if data["versions"]:
        typer.echo("versions:")
        for v in data["versions"]:
            digest = (v.artifact_digest or "-")[:16]
            typer.echo(f"  {ts(v.deployed_at)}  {v.version:<12} {digest}  {v.release_id or ''}")


@cmdb_app.command("changes")
def cmdb_changes(
    since: Annotated[str | None, typer.Option(help="Only changes requested since this date.")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change records (one per release) with status and close code."""
    after = parse_time(since, "--since") if since else None
    changes = cmdb_call(lambda s: s.list_changes(after, service))
    if as_json:
        echo_json(changes)
        return
    rows = [("RELEASE", "SERVICE", "VERSION", "TYPE", "STATUS", "CLOSE CODE", "REQUESTED", "CLOSED")]
    rows += [
        (
            c.release_id,
            c.service,
            c.version,
            c.change_type.value,
            c.status,
            c.close_code.value if c.close_code else "-",
            ts(c.requested_at),
            ts(c.closed_at),
        )
        for c in changes
    ]
    typer.echo(_table(rows) if changes else "no changes")


@cmdb_app.command("windows")
def cmdb_windows(as_json: JsonOpt = False) -> None:
    """Deployment windows: blackouts, maintenance windows, freezes."""
    windows = cmdb_call(lambda s: s.list_windows())
    if as_json:
        echo_json(windows)
        return
    rows = [("NAME", "KIND", "SERVICE", "ENV", "START", "END", "BY", "REASON")]
    rows += [
        (
            w.name,
            w.kind.value,
            w.service or "*",
            w.environment.value if w.environment else "*",
            ts(w.start),
            ts(w.end),
            w.created_by,
            w.reason,
        )
        for w in windows
    ]
    typer.echo(_table(rows) if windows else "no deployment windows")


@window_app.command("add")
def window_add(
    kind: Annotated[WindowKind, typer.Option(help="blackout, maintenance or freeze.")],
    start_at: Annotated[str, typer.Option("--start", help="Start (ISO date/time, UTC if no zone).")],
    end_at: Annotated[str, typer.Option("--end", help="End (ISO date/time).")],
    reason: ReasonOpt,
    user: UserOpt,
    service: Annotated[str | None, typer.Option(help="Only this service (default: all).")] = None,
    environment: Annotated[Environment | None, typer.Option(help="Only this environment.")] = None,
    name: Annotated[str | None, typer.Option(help="Window name (default: from kind and start).")] = None,
) -> None:
    """Declare a deployment window; releases check windows before every exposure step."""
    from relman.cmdb.records import WindowSpec

    begin, end = parse_time(start_at, "--start"), parse_time(end_at, "--end")
    label = name or f"{kind.value}-{begin.strftime('%Y%m%dT%H%M')}" + (f"-{service}" if service else "")
    try:
        spec = WindowSpec(
            name=label,
            kind=kind,
            service=service,
            environment=environment,
            start=begin,
            end=end,
            reason=reason,
            created_by=user,
        )
    except ValidationError as exc:
        raise fail(one_line(exc)) from None
    added = cmdb_call(lambda s: s.add_window(spec))
    typer.echo(f"window {label} {'added' if added else 'already present'}")


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# --- processes: worker, dev server, demo ---------------------------------------


@app.command()
def worker() -> None:
    """Run a worker (workflows + activities) against the configured Temporal; Ctrl-C stops it."""
    from relman.config import load_settings
    from relman.observability import configure_logging
    from relman.worker import run_worker

    try:
        settings = load_settings()
    except RelmanError as exc:
        raise fail(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    run(lambda: run_worker(settings))


@app.command()
def dev(
    port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    db_file: Annotated[
        Path | None, typer.Option(help="SQLite file (default: <data dir>/temporal.db).")
    ] = None,
) -> None:
    """A local Temporal dev server (SQLite-persisted) with relman's search attributes; Ctrl-C stops it."""
    from relman.config import load_settings
    from relman.devserver import DevServer

    async def go() -> None:
        db = db_file or load_settings().data_dir / "temporal.db"
        server = DevServer(port, ui_port, db)
        try:
            await server.start()
            typer.echo(f"Temporal dev server on {server.address} (state in {db})")
            typer.echo(f"Temporal UI: {server.ui_url}")
            typer.echo("Ctrl-C to stop")
            await _wait_forever()
        finally:
            server.stop()

    try:
        run(go)
    except KeyboardInterrupt:
        typer.echo("stopped")


async def _wait_forever() -> None:
    """Until Ctrl-C / SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def demo(
    exit_when_done: Annotated[
        bool, typer.Option("--exit", help="End when the releases are done (for scripts and CI).")
    ] = False,
    port: Annotated[int | None, typer.Option(help="gRPC port (default 7233 if free, else any).")] = None,
    ui_port: Annotated[int | None, typer.Option(help="UI port (default 8233 if free, else any).")] = None,
) -> None:
    """Dev server + worker + two example releases: one through every phase, one that rolls back."""
    from relman.demo import run_demo

    ok = run(lambda: run_demo(exit_when_done=exit_when_done, port=port, ui_port=ui_port, emit=typer.echo))
    if not ok:
        raise fail("the demo's releases did not end as expected")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, flush, and leave with os._exit (sdk-python#300)."""
    code = 0
    try:
        app(args=argv, prog_name="relman", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except RelmanError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
