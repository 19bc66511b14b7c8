"""CMDB commands of the relman CLI: `relman metrics` (DORA) and `relman cmdb ...` (CIs,
changes, deployment windows, the audit log's hash chain)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from relman.cli.common import (
    JsonOpt,
    ReasonOpt,
    UserOpt,
    echo_json,
    fail,
    parse_time,
    table,
    ts,
)
from relman.cmdb.dora import DEFINITIONS as DORA_DEFINITIONS
from relman.contracts import Environment, WindowKind
from relman.errors import RelmanError, one_line

T = TypeVar("T")

app = typer.Typer()
"""`relman metrics`; `relman.cli` adds it to `relman` at the top level."""
cmdb_app = typer.Typer(
    help="Read the CMDB and declare deployment windows.", no_args_is_help=True, rich_markup_mode=None
)
window_app = typer.Typer(
    help="Deployment windows (blackout, maintenance, freeze).", no_args_is_help=True, rich_markup_mode=None
)
cmdb_app.add_typer(window_app, name="window")


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


@app.command(help="DORA metrics from the CMDB.\n\n" + DORA_DEFINITIONS)
def metrics(
    since: Annotated[str | None, typer.Option(help="Start date (default: 30 days ago).")] = None,
    until: Annotated[str | None, typer.Option(help="End date (default: now).")] = None,
    service: Annotated[
        str | None, typer.Option(help="Only this service (one the CMDB or the catalog knows).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw deployments per day (successful, failed) and medians as a PNG.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    end = parse_time(until, "--until") if until else datetime.now(UTC)
    begin = parse_time(since, "--since") if since else end - timedelta(days=30)
    if begin >= end:
        raise fail("--since must be before --until")

    def read(s: Any) -> Any:
        if service is not None and (unknown := _unknown_service(s, service)):
            raise fail(unknown)
        return s.dora(begin, end, service)

    m = cmdb_call(read)
    if plot is not None:
        from relman.cli.dora_plot import draw_metrics

        draw_metrics(m, plot)
    if as_json:
        echo_json(m)
        return

    def fmt(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:.2f}{unit}"

    typer.echo(f"DORA metrics {ts(m.since)} → {ts(m.until)}" + (f" for {service}" if service else ""))
    typer.echo(f"  deployments              {m.deployments} ({m.failures} failed)")
    typer.echo(f"  deployment frequency     {fmt(m.deployment_frequency_per_day, ' /day')}")
    typer.echo(f"  lead time (median)       {fmt(m.lead_time_hours, ' h')}")
    typer.echo(f"  change fail rate         {fmt(m.change_fail_rate)}")
    typer.echo(f"  recovery time (median)   {fmt(m.recovery_hours, ' h')}")
    typer.echo(f"  rework rate              {fmt(m.rework_rate)}")
    if plot is not None:
        typer.echo(f"plot written to {plot}")


def _unknown_service(store: Any, service: str) -> str | None:
    """Why `service` is unknown (no CI, no change in the CMDB, not in the catalog), or None."""
    if store.get_ci(service) is not None or store.list_changes(service=service):
        return None
    from relman.catalog import CatalogError, service_names
    from relman.config import load_settings

    catalog = load_settings().catalog
    try:
        known = service_names(catalog) if catalog.is_file() else []
    except CatalogError:
        known = []
    if service in known:
        return None
    return f"unknown service {service!r}: no CI or change in the CMDB, and not in the catalog {catalog}"


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
    typer.echo(table(rows) if cis else "no configuration items")


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
    typer.echo(table(rows) if changes else "no changes")


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
    typer.echo(table(rows) if windows else "no deployment windows")


@cmdb_app.command("verify-audit")
def cmdb_verify_audit(as_json: JsonOpt = False) -> None:
    """Check the audit log's hash chain and the rows the releases' signed evidence anchors;
    exit 1 naming the first changed, deleted or inserted row."""
    result = cmdb_call(lambda s: s.verify_audit())
    if as_json:
        echo_json(result)
    elif result.ok:
        legacy = f" ({result.legacy_rows} legacy rows before the chain starts)" if result.legacy_rows else ""
        typer.echo(f"audit log intact: {result.rows} rows, {result.anchors} evidence anchors{legacy}")
    else:
        typer.echo(f"audit log broken at row {result.first_broken_id}: {result.reason}")
    if not result.ok:
        raise typer.Exit(1)


@cmdb_app.command("upgrade")
def cmdb_upgrade() -> None:
    """Apply the CMDB's pending schema migrations (back the database up first); says the
    revision before and after. Running it again changes nothing."""
    revisions = cmdb_call(lambda s: (s.url, *s.upgrade()))
    url, before, after = revisions
    if before == after:
        typer.echo(f"CMDB at {url} is at schema revision {after}: nothing to upgrade")
    else:
        typer.echo(f"CMDB at {url} upgraded from schema revision {before or 'none'} to {after}")


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
