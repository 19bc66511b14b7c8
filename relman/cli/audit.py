"""`relman audit ID`: one release's audit trail from the CMDB, cross-checked against Temporal.

The trail comes from the CMDB alone (change record, audit rows, stored evidence: see
relman/audit.py); the evidence is also verified against the catalog when this process can
read it. Temporal is then asked for the release's status, with a short timeout: when it
answers, every mismatch is named; when not, the trail stands on the CMDB alone. Exit 1 when
the CMDB disagrees with itself or with Temporal.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from relman.cli.common import ReleaseIdArg, fail, safe, short, ts
from relman.contracts import GO_LIVE, Decision, StatusSource, release_id_problem
from relman.errors import NotFoundError, RelmanError

if TYPE_CHECKING:
    from relman.audit import AuditTrail, AuditVote, CrossCheck
    from relman.cmdb.records import AuditEntry, ChangeDetail
    from relman.config import Settings
    from relman.contracts import ReleaseStatus
    from relman.identity.evidence import EvidenceReport

CONNECT_TIMEOUT = 5.0
"""Seconds to reach Temporal before the audit goes on with the CMDB alone."""
STATUS_TIMEOUT = 10.0
"""Seconds for Temporal to return the release's status (a closed release needs no worker)."""


def _fail(message: str) -> NoReturn:
    raise fail(message)


# --- reading the CMDB, the catalog and Temporal -----------------------------------------


def read_cmdb(
    settings: Settings, release_id: str
) -> tuple[ChangeDetail | None, list[AuditEntry], dict[str, Any] | None]:
    """The change, its audit rows and its stored evidence envelope (None when there is none)."""
    from relman.cmdb import CmdbStore
    from relman.cmdb.errors import CmdbError

    try:
        store = CmdbStore(settings.cmdb)
    except CmdbError as exc:
        _fail(f"CMDB: {exc}")
    try:
        change = store.get_change(release_id)
        if change is None:
            return None, [], None
        stored = store.get_evidence(release_id)
        return change, store.audit(release_id), dict(stored.envelope) if stored is not None else None
    except CmdbError as exc:
        _fail(f"CMDB: {exc}")
    finally:
        store.close()


def verify_with_catalog(settings: Settings, envelope: dict[str, Any]) -> tuple[EvidenceReport | None, str]:
    """The evidence checked against the configured catalog, or why it could not be."""
    from relman.catalog import CatalogError, read_trust
    from relman.identity.evidence import verify_evidence

    if not settings.catalog.is_file():
        return None, f"not checked: no catalog at {settings.catalog} (RELMAN_CATALOG)"
    try:
        trust = read_trust(settings.catalog, data_dir=settings.data_dir)
    except CatalogError as exc:
        return None, f"not checked: {exc}"
    return verify_evidence(envelope, trust.services, trust.evidence_keys), ""


async def _status(release_id: str) -> ReleaseStatus:
    from relman.client import ReleaseClient

    client = await asyncio.wait_for(ReleaseClient.connect(), CONNECT_TIMEOUT)
    return await asyncio.wait_for(client.status(release_id), STATUS_TIMEOUT)


def temporal_check(trail: AuditTrail) -> CrossCheck:
    """The trail against Temporal's status of the release, or why Temporal could not say."""
    from relman.audit import CrossCheck, cross_check

    try:
        status = asyncio.run(_status(trail.release_id))
    except NotFoundError:
        return CrossCheck(
            checked=False,
            note=(
                f"Temporal has no release named {trail.release_id} (past the namespace's retention, "
                "or another namespace): CMDB only"
            ),
        )
    except TimeoutError:
        return CrossCheck(checked=False, note="Temporal not reachable: CMDB only (no answer in time)")
    except RelmanError as exc:
        return CrossCheck(checked=False, note=f"Temporal not reachable: CMDB only ({exc})")
    except Exception as exc:
        # An audit still stands on the CMDB when Temporal's answer cannot be used (e.g. a
        # status in an older contract): say why, and go on.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CrossCheck(checked=False, note=f"Temporal's answer cannot be used: CMDB only ({reason})")
    if status.source is StatusSource.RECORDS:
        # Rebuilt partly from this same CMDB: comparing the trail with it would prove nothing.
        return CrossCheck(checked=False, note="no worker answered (status only from records): CMDB only")
    return CrossCheck(checked=True, mismatches=cross_check(trail, status))


# --- the command ------------------------------------------------------------------------


def audit_cmd(
    release_id: ReleaseIdArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the trail as JSON.")] = False,
) -> None:
    """A release's audit trail from the CMDB: request, votes, amendments, package, tests,
    stages, overrides, deploys, review, close code; cross-checked against Temporal when it
    answers. Exit 1 when anything disagrees."""
    from relman.audit import trail_from_cmdb
    from relman.config import load_settings

    if problem := release_id_problem(release_id):
        _fail(problem)
    try:
        settings = load_settings()
    except RelmanError as exc:
        _fail(str(exc))
    change, rows, envelope = read_cmdb(settings, release_id)
    if change is None:
        _fail(f"the CMDB has no change named {release_id}")
    report, note = verify_with_catalog(settings, envelope) if envelope is not None else (None, "")
    trail = trail_from_cmdb(change, rows, envelope, report=report)
    if note:
        trail.evidence.note = note
    trail.temporal = temporal_check(trail)
    if as_json:
        typer.echo(trail.model_dump_json(indent=2))
    else:
        typer.echo(format_trail(trail))
    if not trail.ok:
        raise typer.Exit(1)


# --- text -----------------------------------------------------------------------------


def format_trail(trail: AuditTrail) -> str:
    """The trail as text, in the order of the release; every recorded string through `safe`."""
    from relman.audit import AUDIT_LOG, CHANGE_RECORD, EVIDENCE

    def key(key_id: str | None, provider: str | None = None) -> str:
        if key_id is None:
            return "no key recorded"
        return f"key {safe(key_id)}" + (f" via {safe(provider)}" if provider else "")

    def where(recorded_in: list[str], both: tuple[str, str]) -> str:
        """A marker when a record is in only one of the two places that should both hold it."""
        missing = [p for p in both if p not in recorded_in]
        return f"  [not in the {' or '.join(missing)}]" if missing and len(missing) < len(both) else ""

    def vote(v: AuditVote, *, marginal: bool = False) -> str:
        decision = v.decision.value
        if marginal:
            decision = "accepted" if v.decision is Decision.APPROVE else "rejected"
        who = f"{safe(v.approver)} ({key(v.key_id, v.provider)})"
        if v.on_behalf_of:
            until = f", until {ts(v.delegation_not_after)}" if v.delegation_not_after else ""
            delegation = (
                f"delegation {key(v.delegation_key_id)}{until}" if v.delegation_key_id else "delegated"
            )
            who += f" for {safe(v.on_behalf_of)} ({delegation})"
        comment = f": {safe(v.comment)}" if v.comment else ""
        marker = "" if marginal else where(v.recorded_in, (CHANGE_RECORD, EVIDENCE))
        return f"{ts(v.at)}  {decision:<8} {who} on {short(v.subject_hash)}{comment}{marker}"

    def step_name(step: str) -> str:
        return "go-live" if step == GO_LIVE else f"stage {safe(step)}"

    r = trail.request
    ev = trail.evidence
    source = f"evidence {short(ev.envelope_sha256 or '')}" if ev.present else "no evidence"
    lines = [
        f"audit of {safe(trail.release_id)} from the CMDB "
        f"(change record, {len(trail.log)} audit row(s), {source})",
        "request:",
        f"  {ts(r.requested_at)}  {safe(r.requested_by)} requested {safe(r.service)} {safe(r.version)}: "
        f"{safe(r.change_type.value)} change"
        + (f" (model {safe(r.change_model)})" if r.change_model else "")
        + f", risk {safe(r.risk)}",
        f"  title    {safe(r.title)}",
        f"  commit   {safe(r.commit or '-')}",
    ]
    if r.request_hash is not None:
        signed = f", signed {ts(r.signed_at)}" if r.signed_at else ""
        lines.append(f"  signed   hash {short(r.request_hash)}, {key(r.key_id, r.provider)}{signed}")

    lines.append("votes:" if trail.gates else "votes: none recorded")
    for g in trail.gates:
        state = g.state.value if g.state else "as the change record has them"
        required = f", {g.required} required" if g.required is not None else ""
        bound = f", bound to {short(g.subject_hash)}" if g.subject_hash else ""
        lines.append(f"  gate {g.gate.value:<9} {state}{required}{bound}")
        lines += [f"    {vote(v)}" for v in g.votes] or ["    no votes"]

    lines.append("amendments:" if trail.amendments else "amendments: none")
    for a in trail.amendments:
        lines.append(
            f"  {ts(a.at)}  revision {a.revision if a.revision is not None else '?'} by {safe(a.by)} "
            f"({key(a.key_id)}): {short(a.previous_hash)} → {short(a.plan_hash)}: {safe(a.reason)}"
            + where(a.recorded_in, (AUDIT_LOG, EVIDENCE))
        )
        lines += [f"    - {safe(c)}" for c in a.changes]
    if trail.plan_hash:
        revision = f"revision {trail.plan_revision}, " if trail.plan_revision is not None else ""
        lines.append(f"  plan     {revision}hash {short(trail.plan_hash)}")

    p = trail.package
    if p is None:
        lines.append("package: none recorded")
    else:
        lines.append("package:")
        lines.append(f"  digest   {safe(p.digest or '-')}")
        lines += [
            f"  artifact {safe(a.name)} sha256 {safe(a.sha256)}"
            + (f" ({a.size} bytes)" if a.size is not None else "")
            for a in p.artifacts
        ]

    t = trail.tests
    if t is None:
        lines.append("tests: none recorded")
    else:
        lines.append(f"tests: {'accepted' if t.accepted else 'not accepted'}")
        lines += [
            f"  {safe(s.name):<12} {s.passed} passed, {s.failed} failed, {s.skipped} skipped, "
            f"{s.errors} errors" + (", timed out" if s.timed_out else "")
            for s in t.suites
        ]

    lines.append("stages:" if trail.stages else "stages: none recorded")
    for s in trail.stages:
        verdict = s.verdict.value if s.verdict else "-"
        when = f" {ts(s.started_at)} → {ts(s.ended_at)}" if s.started_at or s.ended_at else ""
        lines.append(f"  {safe(s.name):<12} {s.percent:>5g}%  {verdict:<8}{when}".rstrip())
        if s.health is not None:
            h = s.health
            parts = [h.verdict.value]
            if h.error_rate is not None:
                parts.append(f"error rate {h.error_rate * 100:.3g}%")
            if h.latency_ms is not None:
                parts.append(f"latency {h.latency_ms:.3g} ms")
            parts.append(f"{h.samples} samples")
            lines.append(f"    health   {', '.join(parts)}" + (f": {safe(h.detail)}" if h.detail else ""))
        lines += [f"    {vote(d, marginal=True)}" for d in s.decisions]

    if trail.window_waits:
        lines.append("windows:")
        for w in trail.window_waits:
            until = f"until {ts(w.until)}" if w.until else "still waiting"
            window = f"window '{safe(w.window)}'" if w.window else "an unnamed window"
            how = f", let through by {safe(w.overridden_by)}" if w.overridden_by else ""
            reason = f": {safe(w.reason)}" if w.reason else ""
            lines.append(f"  {step_name(w.step)} held by {window} since {ts(w.since)}, {until}{how}{reason}")
    lines.append("overrides:" if trail.overrides else "overrides: none")
    for o in trail.overrides:
        lines.append(
            f"  {ts(o.at)}  {safe(o.by)} ({key(o.key_id)}) let {step_name(o.step)} through window "
            f"'{safe(o.window)}': {safe(o.reason)}" + where(o.recorded_in, (AUDIT_LOG, EVIDENCE))
        )
    if trail.actions:
        lines.append("operator actions:")
        lines += [
            f"  {ts(a.at)}  {a.action.value:<8} by {safe(a.by)} ({key(a.key_id)}): {safe(a.reason)}"
            for a in trail.actions
        ]

    lines.append("deploys:" if trail.deploys else "deploys: none recorded")
    lines += [
        f"  {ts(d.at)}  {d.environment.value:<10} {safe(d.version)}"
        + (f" (was {safe(d.previous_version)})" if d.previous_version else "")
        for d in trail.deploys
    ]

    rv = trail.review
    if rv is None:
        lines.append("review: none recorded")
    else:
        kpis = ", ".join(f"{safe(k)}={v:g}" for k, v in sorted(rv.kpis.items())) or "none"
        lines += [f"review: {ts(rv.at)}", f"  kpis     {kpis}"]
        lines += [
            f"  feedback {safe(f.by)} {f.rating}/5 ({key(f.key_id)})"
            + (f": {safe(f.comment)}" if f.comment else "")
            for f in rv.feedback
        ]

    c = trail.close
    if c.closed_at is None:
        lines.append(f"close: not closed (change {safe(c.status)})")
    else:
        lines.append(
            f"close: {ts(c.closed_at)}  {safe(c.outcome or '-')}, "
            f"close code {c.close_code.value if c.close_code else '-'}"
        )
        if c.reason:
            lines.append(f"  reason   {safe(c.reason)}")
        if c.deployed_version:
            was = f" (was {safe(c.previous_version)})" if c.previous_version else ""
            lines.append(f"  deployed {safe(c.deployed_version)}{was} at {ts(c.production_at)}")
        if c.artifact_digest:
            lines.append(f"  digest   {safe(c.artifact_digest)}")
        if c.failed_at:
            lines.append(f"  failed   {ts(c.failed_at)}, recovered {ts(c.recovered_at)}")

    if ev.present:
        if ev.verified is None:
            checked = safe(ev.note) if ev.note else "not checked"
        elif ev.verified:
            checked = f"verified against the catalog ({ev.signatures} signatures)"
        else:
            checked = "does NOT verify against the catalog (see findings)"
        lines.append(
            f"evidence: sha256 {safe(ev.envelope_sha256 or '-')}, "
            f"signed by key {safe(ev.key_id or '-')}, {checked}"
        )
    else:
        lines.append("evidence: none in the CMDB")

    lines.append("audit log:")
    lines += [
        f"  {ts(row.at)}  {safe(row.actor):<12} {safe(row.action):<18} {safe(row.detail)}".rstrip()
        for row in trail.log
    ]

    lines.append(f"findings: {len(trail.findings)}" if trail.findings else "findings: none")
    lines += [f"  - {safe(f)}" for f in trail.findings]
    check = trail.temporal
    if check is not None:
        if check.checked:
            lines.append(f"cross-checked against Temporal: {len(check.mismatches)} mismatches")
            lines += [f"  - {safe(m)}" for m in check.mismatches]
        else:
            lines.append(safe(check.note))
    return "\n".join(lines)
