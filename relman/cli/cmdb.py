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


IcsOpt = Annotated[bool, typer.Option("--ics", help="Print the calendar as .ics (RFC 5545).")]
IcsOutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="With --ics: write it to this file.")
]

WINDOW_LIST_HELP = """Deployment windows (blackouts, maintenance windows, freezes): id, kind, name,
service, schedule (RRULE and zone, or the interval) and next occurrence; `--ics` writes
them as an iCalendar file instead."""


@cmdb_app.command("windows", help=WINDOW_LIST_HELP)
def cmdb_windows(
    ics: IcsOpt = False,
    output: IcsOutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    windows = cmdb_call(lambda s: s.list_windows())
    if output is not None and not ics:
        raise fail("--output goes with --ics")
    if ics:
        from relman.cmdb.calendar import to_ics

        data = to_ics(windows)
        if output is None:
            typer.echo(data, nl=False)  # bytes: CRLF line ends as RFC 5545 says
        else:
            output.write_bytes(data)
            typer.echo(f"{len(windows)} windows written to {output}")
        return
    if as_json:
        echo_json(windows)
        return
    rows = [("ID", "KIND", "NAME", "SERVICE", "ENV", "SCHEDULE", "NEXT", "BY", "REASON")]
    rows += [
        (
            w.id or "-",
            w.kind.value,
            w.name,
            w.service or "*",
            w.environment.value if w.environment else "*",
            _schedule(w),
            _next_occurrence(w),
            w.created_by,
            w.reason,
        )
        for w in windows
    ]
    typer.echo(table(rows) if windows else "no deployment windows")


def _schedule(w: Any) -> str:
    """`FREQ=WEEKLY;BYDAY=FR from 2027-03-26 18:00 for 60:00 Europe/Paris`, or the UTC interval."""
    if not w.rrule:
        return f"{ts(w.start)} → {ts(w.end)}"
    from relman.cmdb.records import zone_info

    zone = zone_info(w.timezone) if w.timezone else UTC
    start, end = w.start.astimezone(zone), w.end.astimezone(zone)
    hours, rest = divmod(int((end.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds()), 3600)
    return f"{w.rrule} from {start:%Y-%m-%d %H:%M} for {hours}:{rest // 60:02d} {w.timezone or 'UTC'}"


def _next_occurrence(w: Any) -> str:
    """The current or next occurrence, in UTC; `-` when none is left."""
    from relman.cmdb.calendar import HORIZON, occurrences

    now = datetime.now(UTC)
    found = occurrences(w, now, now + HORIZON)
    if not found:
        return "-"
    start, end = found[0]
    return f"{ts(start)} → {ts(end)}" + (" (now)" if start <= now else "")


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


def _zoned_time(value: str, name: str, timezone: str | None) -> datetime:
    """ISO date/time; naive values are UTC, or local time in `timezone` when one is given."""
    at = parse_time(value, name)
    if timezone and datetime.fromisoformat(value).tzinfo is None:
        return at.replace(tzinfo=None)  # WindowSpec reads it in the window's zone
    return at


def _known_services() -> list[str]:
    """The catalog's services; none when the catalog is unreadable (then only CIs count)."""
    from relman.catalog import CatalogError, service_names
    from relman.config import load_settings

    catalog = load_settings().catalog
    try:
        return list(service_names(catalog)) if catalog.is_file() else []
    except CatalogError:
        return []


@window_app.command("add")
def window_add(
    kind: Annotated[WindowKind, typer.Option(help="blackout, maintenance or freeze.")],
    start_at: Annotated[
        str,
        typer.Option(
            "--start", help="(First) start, ISO date/time: UTC if no offset, local with --timezone."
        ),
    ],
    end_at: Annotated[str, typer.Option("--end", help="(First) end, ISO date/time.")],
    reason: ReasonOpt,
    user: UserOpt,
    service: Annotated[
        str | None, typer.Option(help="Only this service, one the catalog or the CMDB knows (default: all).")
    ] = None,
    environment: Annotated[Environment | None, typer.Option(help="Only this environment.")] = None,
    name: Annotated[str | None, typer.Option(help="Window name (default: from kind and start).")] = None,
    rrule: Annotated[
        str | None,
        typer.Option(
            help="Repeat by this RFC 5545 rule, e.g. FREQ=WEEKLY;BYDAY=FR (--start/--end: the first)."
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA time zone of the times and the rule, e.g. Europe/Paris (default UTC)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Remove the windows this one overlaps (or whose name it takes).")
    ] = False,
) -> None:
    """Declare a deployment window; releases check windows before every exposure step.
    Refused when it overlaps a window of the same kind, service and environment (or takes
    its name), unless --replace; refused for a service neither the catalog nor the CMDB knows."""
    from relman.cmdb.records import WindowSpec

    begin, end = _zoned_time(start_at, "--start", timezone), _zoned_time(end_at, "--end", timezone)
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
            rrule=rrule,
            timezone=timezone,
        )
    except ValidationError as exc:
        raise fail(one_line(exc)) from None
    services = _known_services()
    done = cmdb_call(lambda s: s.save_window(spec, replace=replace, services=services))
    for old in done.replaced:
        typer.echo(f"window {old.id} ({old.name}) removed: replaced")
    typer.echo(f"window {done.window.id} ({done.window.name}) {'added' if done.added else 'already present'}")


@window_app.command("list", help=WINDOW_LIST_HELP)
def window_list(
    ics: IcsOpt = False,
    output: IcsOutputOpt = None,
    as_json: JsonOpt = False,
) -> None:
    cmdb_windows(ics=ics, output=output, as_json=as_json)


@window_app.command("remove")
def window_remove(
    window_id: Annotated[str, typer.Argument(metavar="ID", help="The window's id (or name), as listed.")],
    user: UserOpt,
) -> None:
    """Remove a deployment window (recorded in the audit log)."""

    def remove(s: Any) -> Any:
        w = s.get_window(window_id)
        if w is None or not s.remove_window(w.id, actor=user):
            raise fail(f"no deployment window with id {window_id}")
        return w

    w = cmdb_call(remove)
    typer.echo(f"window {w.id} ({w.name}) removed")


@window_app.command("import")
def window_import(
    file: Annotated[Path, typer.Argument(help="An iCalendar (.ics) file.", show_default=False)],
    user: UserOpt,
    replace: Annotated[
        bool, typer.Option("--replace", help="Let each event replace the windows it overlaps.")
    ] = False,
) -> None:
    """Add the events of an .ics file as windows, under the same rules as `window add`
    (an event naming no kind is a freeze); says, per event, added or refused and why.
    Exit 1 when any was refused."""
    from relman.cmdb.calendar import from_ics
    from relman.cmdb.errors import CmdbError

    try:
        data = file.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        specs = from_ics(data, created_by=user)
    except CmdbError as exc:
        raise fail(f"{file}: {exc}") from None
    services = _known_services()

    def add_all(s: Any) -> list[tuple[Any, Any, str | None]]:
        results: list[tuple[Any, Any, str | None]] = []
        for spec in specs:
            try:
                results.append((spec, s.save_window(spec, replace=replace, services=services), None))
            except CmdbError as exc:
                results.append((spec, None, " ".join(str(exc).split())))
        return results

    refused = 0
    for spec, done, why in cmdb_call(add_all):
        if done is None:
            refused += 1
            typer.echo(f"refused  {spec.name}: {why}")
        else:
            typer.echo(f"{'added   ' if done.added else 'present '} {done.window.id} {done.window.name}")
    typer.echo(f"{len(specs) - refused} of {len(specs)} events imported from {file}")
    if refused:
        raise typer.Exit(1)
