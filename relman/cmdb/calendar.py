"""The change calendar, pure: recurring zoned windows, the window rule, `.ics` out and in.

No database and no Temporal here: the store reads `WindowSpec`s and asks `decide`; the
CLI asks `to_ics`/`from_ics`. Recurrence is RFC 5545, expanded by python-dateutil's
`rrulestr` in the window's own IANA zone, so an occurrence keeps the first one's local
wall-clock start and local duration across DST changes; `.ics` goes through `icalendar`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Any

from dateutil.rrule import rruleset, rrulestr
from icalendar import Calendar, Component, Event, vRecur
from pydantic import ValidationError

from relman.cmdb.errors import CmdbInvalid
from relman.cmdb.records import WindowSpec, zone_info
from relman.contracts import ChangeType, WindowDecision, WindowKind
from relman.errors import one_line

HORIZON = timedelta(days=400)
"""How far `decide` looks for the end of a chain of closing windows."""

PRODID = "-//relman//change calendar//EN"
DEFAULT_IMPORT_KIND = WindowKind.FREEZE
"""The kind of an imported event that names none (in CATEGORIES or a `kind:` SUMMARY prefix).

A freeze stops normal and standard changes but lets an emergency fix through: an unlabelled
event from another calendar closes deployment without ever holding back an incident's fix
(a blackout would), and it is not silently ignored (a maintenance window would be).
"""


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _zone(spec: WindowSpec) -> tzinfo:
    return zone_info(spec.timezone) if spec.timezone else UTC


def _local(at: datetime, zone: tzinfo) -> datetime:
    """`at` as wall-clock time in `zone` (a naive `at` already is)."""
    return at.replace(tzinfo=zone) if at.tzinfo is None else at.astimezone(zone)


def occurrences(spec: WindowSpec, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The window's occurrences overlapping [since, until), as UTC [start, end) in start order.

    A one-off window is its one interval. A recurring one starts with `start` (RFC 5545
    counts DTSTART as the first occurrence) and repeats by its RRULE in its zone: each
    occurrence has the first one's local start time and local duration, so its real length
    moves with the DST changes it spans. A local start that a DST change skips takes the
    offset before the change, as RFC 5545 says.
    """
    since, until = _utc(since), _utc(until)
    zone = _zone(spec)
    first, last = _local(spec.start, zone), _local(spec.end, zone)
    if spec.rrule is None:
        start, end = _utc(first), _utc(last)
        return [(start, end)] if start < until and end > since else []
    wall = last.replace(tzinfo=None) - first.replace(tzinfo=None)
    starts = rrulestr(spec.rrule, dtstart=first, forceset=True)
    assert isinstance(starts, rruleset)
    starts.rdate(first)
    # Any occurrence overlapping `since` starts less than its local length (plus a DST shift) before.
    after = since - wall - timedelta(days=1)
    found = []
    for begin in starts.between(after, until, inc=True):
        start = _utc(begin)
        end = _utc((begin.replace(tzinfo=None) + wall).replace(tzinfo=zone))
        if start < until and end > since:
            found.append((start, end))
    return found


def closing_kinds(change_type: ChangeType) -> frozenset[WindowKind]:
    """Window kinds that stop a change of this type."""
    if change_type == ChangeType.EMERGENCY:
        return frozenset({WindowKind.BLACKOUT})
    return frozenset({WindowKind.BLACKOUT, WindowKind.FREEZE})


def _active(spec: WindowSpec, at: datetime) -> bool:
    return bool(occurrences(spec, at, at + timedelta(microseconds=1)))


def _when(at: datetime, zone: tzinfo) -> str:
    """`2027-03-29 06:00 CEST (04:00 UTC)`: local time in the window's zone, then UTC."""
    clock = "%H:%M:%S" if at.second or at.microsecond else "%H:%M"
    utc = at.astimezone(UTC)
    if zone is UTC:
        return utc.strftime(f"%Y-%m-%d {clock} UTC")
    local = at.astimezone(zone)
    utc_text = utc.strftime(clock if utc.date() == local.date() else f"%Y-%m-%d {clock}")
    return f"{local.strftime(f'%Y-%m-%d {clock} %Z')} ({utc_text} UTC)"


def decide(
    windows: Sequence[WindowSpec], at: datetime, change_type: ChangeType, horizon: timedelta = HORIZON
) -> WindowDecision:
    """The window rule over windows that already apply to the service and environment.

    Blackouts close deployment for every change, freezes for all but emergencies,
    maintenance never. When closed: the window (blackouts first, then by name), a reason
    naming its reopening time in its own zone, and `next_open`, the exact end of the chain
    of closing occurrences that overlap or touch from `at` on; None when that chain of
    recurring windows is still closed `horizon` after `at`.
    """
    at = _utc(at)
    kinds = closing_kinds(change_type)
    closing = [w for w in windows if w.kind in kinds]
    until = at + horizon
    spans = sorted(
        ((start, end, w) for w in closing for start, end in occurrences(w, at, until)), key=lambda s: s[0]
    )
    now_closing = [w for start, end, w in spans if start <= at < end]
    if not now_closing:
        maintenance = [w.name for w in windows if w.kind == WindowKind.MAINTENANCE and _active(w, at)]
        reason = f"open; inside maintenance window {', '.join(maintenance)}" if maintenance else "open"
        return WindowDecision(open=True, reason=reason)
    next_open = max(end for start, end, _ in spans if start <= at < end)
    # Spans sorted by start: one pass follows the chain; the first gap ends it.
    for start, end, _ in spans:
        if start > next_open:
            break
        next_open = max(next_open, end)
    reopens: datetime | None = next_open
    if next_open >= until and any(w.rrule for w in closing):
        reopens = None  # recurring windows may keep the chain going past what was looked at
    first = sorted(now_closing, key=lambda w: (w.kind != WindowKind.BLACKOUT, w.name))[0]
    reason = f"{first.kind.value} {first.name!r} ({first.reason or 'no reason given'}); "
    if reopens is None:
        reason += f"closed for more than {horizon.days} days: no reopening known"
    else:
        reason += f"open again at {_when(reopens, _zone(first))}"
    return WindowDecision(
        open=False, window=first.name, kind=first.kind, reason=reason[:1000], next_open=reopens
    )


# --- .ics -----------------------------------------------------------------------------


def _uid(w: WindowSpec) -> str:
    if w.id:
        return w.id
    return f"{w.kind.value}-{w.name}-{w.service or 'all'}-{_utc(w.start):%Y%m%dT%H%M%SZ}@relman"


def to_ics(windows: Iterable[WindowSpec], stamp: datetime | None = None) -> bytes:
    """A VCALENDAR with one VEVENT per window, for the calendars people read.

    UID is the window's id (or one made from kind, name, service and start); DTSTART and
    DTEND carry the window's TZID (UTC without one) and a VTIMEZONE for each zone; RRULE;
    SUMMARY `<kind>: <name>`; DESCRIPTION its reason; CATEGORIES its kind; X-RELMAN-SERVICE,
    X-RELMAN-ENVIRONMENT and X-RELMAN-ID when set. DTSTAMP is `stamp`, or each window's
    start, so that the same windows always give the same bytes.
    """
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    for w in windows:
        zone = _zone(w)
        event = Event()
        event.add("uid", _uid(w))
        event.add("dtstamp", _utc(stamp or w.start))
        event.add("dtstart", _local(w.start, zone))
        event.add("dtend", _local(w.end, zone))
        if w.rrule:
            event.add("rrule", vRecur.from_ical(w.rrule))
        event.add("summary", f"{w.kind.value}: {w.name}")
        if w.reason:
            event.add("description", w.reason)
        event.add("categories", [w.kind.value])
        for prop, value in (
            ("x-relman-service", w.service),
            ("x-relman-environment", w.environment.value if w.environment else None),
            ("x-relman-id", w.id),
        ):
            if value:
                event.add(prop, value)
        cal.add_component(event)
    cal.add_missing_timezones()
    return bytes(cal.to_ical())


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _kind_of(event: Component, summary: str, default: WindowKind) -> tuple[WindowKind, str]:
    """The event's kind (CATEGORIES, else a `kind:` SUMMARY prefix, else `default`) and name."""
    kinds = {k.value: k for k in WindowKind}
    prefix, colon, rest = summary.partition(":")
    named = kinds.get(prefix.strip().lower()) if colon else None
    name = rest.strip() if named else summary
    categories = event.get("categories")
    for cats in categories if isinstance(categories, list) else [categories] if categories else []:
        for cat in getattr(cats, "cats", []):
            if (kind := kinds.get(str(cat).strip().lower())) is not None:
                return kind, name
    return named or default, name


def _zone_name(event: Component, prop: str) -> str | None:
    """The IANA zone of a DTSTART/DTEND (None for UTC, floating or a date); unknown TZID: error."""
    value = event.decoded(prop)
    if not isinstance(value, datetime):
        return None
    key = getattr(value.tzinfo, "key", None)
    if isinstance(key, str):
        return None if key in ("UTC", "Etc/UTC") else key
    tzid = event[prop].params.get("TZID")
    if tzid:
        zone_info(str(tzid))  # an IANA name, or a one-line error
        return str(tzid)
    return None


def _moment(event: Component, prop: str) -> datetime:
    """An .ics DATE or DATE-TIME as a datetime: all-day and floating times are read as UTC."""
    value = event.decoded(prop)
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), tzinfo=UTC)
    if value.tzinfo is None:
        zone = _zone_name(event, prop)
        return value.replace(tzinfo=zone_info(zone) if zone else UTC)
    return value


def _window(event: Component, created_by: str, default_kind: WindowKind) -> WindowSpec:
    uid = _text(event.get("uid")) or "(no UID)"
    for unsupported in ("rdate", "exdate", "recurrence-id"):
        if unsupported in event:
            raise ValueError(f"{unsupported.upper()} is not supported (only DTSTART, DTEND and one RRULE)")
    if "dtstart" not in event:
        raise ValueError("no DTSTART")
    start = _moment(event, "dtstart")
    if "dtend" in event:
        end = _moment(event, "dtend")
    elif "duration" in event:
        end = start + event.decoded("duration")
    elif not isinstance(event.decoded("dtstart"), datetime):
        end = start + timedelta(days=1)  # an all-day event lasts its day
    else:
        raise ValueError("no DTEND or DURATION")
    timezone = _zone_name(event, "dtstart")
    if timezone is not None:
        start, end = start.astimezone(zone_info(timezone)), end.astimezone(zone_info(timezone))
    rrule = event.get("rrule")
    if isinstance(rrule, list):
        raise ValueError("more than one RRULE is not supported")
    kind, name = _kind_of(event, _text(event.get("summary")), default_kind)
    return WindowSpec(
        id=_text(event.get("x-relman-id")) or None,
        name=(name or uid)[:200],
        kind=kind,
        service=_text(event.get("x-relman-service")) or None,
        environment=_text(event.get("x-relman-environment")) or None,
        reason=_text(event.get("description"))[:1000],
        created_by=created_by,
        start=start,
        end=end,
        rrule=rrule.to_ical().decode() if rrule is not None else None,
        timezone=timezone,
    )


def from_ics(
    data: bytes | str, created_by: str, default_kind: WindowKind = DEFAULT_IMPORT_KIND
) -> list[WindowSpec]:
    """The windows of an .ics file: relman's own export, or events from another calendar.

    Each VEVENT (CANCELLED ones skipped) becomes a window: kind from CATEGORIES, else from a
    `blackout:`/`freeze:`/`maintenance:` SUMMARY prefix, else `default_kind` (a freeze, see
    DEFAULT_IMPORT_KIND); name from SUMMARY without that prefix; reason from DESCRIPTION;
    service, environment and id from relman's X- properties. A TZID must be an IANA zone;
    floating and all-day times are read as UTC. RDATE, EXDATE and RECURRENCE-ID are refused
    rather than half-read. Raises CmdbInvalid with one line on a malformed file or event.
    """
    try:
        cal = Calendar.from_ical(data)
    except Exception as exc:  # icalendar raises ValueError, KeyError, IndexError... on garbage
        raise CmdbInvalid(f"not an iCalendar (.ics) file: {_text(exc)[:200]}") from None
    if not isinstance(cal, Calendar) or cal.name != "VCALENDAR":
        raise CmdbInvalid("not an iCalendar (.ics) file: no VCALENDAR")
    windows = []
    for event in cal.walk("VEVENT"):
        if _text(event.get("status")).upper() == "CANCELLED":
            continue
        uid = _text(event.get("uid")) or "(no UID)"
        try:
            windows.append(_window(event, created_by, default_kind))
        except ValidationError as exc:
            raise CmdbInvalid(f"event {uid}: {one_line(exc)}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CmdbInvalid(f"event {uid}: {_text(exc)[:300]}") from None
    return windows
