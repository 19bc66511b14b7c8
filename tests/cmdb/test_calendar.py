"""The change calendar (relman/cmdb/calendar.py), pure: recurring zoned windows across DST,
the window rule and its exact reopening time, `.ics` export and import. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

import relman.cmdb
from relman.cmdb import CmdbInvalid
from relman.cmdb.calendar import decide, from_ics, occurrences, to_ics
from relman.cmdb.records import WindowSpec
from relman.contracts import ChangeType, Environment, WindowKind
from relman.errors import one_line

H = timedelta(hours=1)
T0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NORMAL, EMERGENCY = ChangeType.NORMAL, ChangeType.EMERGENCY


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def window(name: str, kind: WindowKind, start: datetime, end: datetime, **more: object) -> WindowSpec:
    return WindowSpec.model_validate(
        {"name": name, "kind": kind, "start": start, "end": end, "reason": f"{name} reason",
         "created_by": "erin", **more}
    )  # fmt: skip


def weekend_freeze(first_friday: datetime = datetime(2027, 3, 19, 18)) -> WindowSpec:
    """Every Friday 18:00 to Monday 06:00, Paris time (naive: read as local there)."""
    return WindowSpec(
        name="weekend", kind=WindowKind.FREEZE, start=first_friday, end=first_friday + 60 * H,
        reason="no Friday deploys", created_by="erin", rrule="FREQ=WEEKLY;BYDAY=FR",
        timezone="Europe/Paris",
    )  # fmt: skip


# --- recurring, zoned windows across DST -----------------------------------------------


def test_weekly_freeze_across_the_march_dst_change() -> None:
    freeze = [weekend_freeze()]
    # Friday 26 March 2027 is still winter time (CET, UTC+1): closes at 17:00 UTC.
    assert decide(freeze, utc(2027, 3, 26, 16, 59), NORMAL).open
    closed = decide(freeze, utc(2027, 3, 26, 17), NORMAL)
    assert not closed.open and closed.kind == WindowKind.FREEZE and closed.window == "weekend"
    # Clocks go forward on Sunday 28 March: Monday 06:00 is CEST, 04:00 UTC.
    sunday = decide(freeze, utc(2027, 3, 28, 12), NORMAL)
    assert sunday.next_open == utc(2027, 3, 29, 4)
    assert sunday.reason == (
        "freeze 'weekend' (no Friday deploys); open again at 2027-03-29 06:00 CEST (04:00 UTC)"
    )
    assert closed.next_open == utc(2027, 3, 29, 4)
    assert not decide(freeze, utc(2027, 3, 29, 3, 59), NORMAL).open
    assert decide(freeze, utc(2027, 3, 29, 4), NORMAL).open  # half-open
    # The next Friday is summer time: 18:00 CEST is 16:00 UTC.
    assert decide(freeze, utc(2027, 4, 2, 15, 59), NORMAL).open
    assert decide(freeze, utc(2027, 4, 2, 16), NORMAL).next_open == utc(2027, 4, 5, 4)
    spans = occurrences(freeze[0], utc(2027, 3, 20), utc(2027, 4, 3))
    assert spans == [
        (utc(2027, 3, 19, 17), utc(2027, 3, 22, 5)),  # overlaps `since`: kept
        (utc(2027, 3, 26, 17), utc(2027, 3, 29, 4)),  # 59 real hours
        (utc(2027, 4, 2, 16), utc(2027, 4, 5, 4)),
    ]


def test_weekly_freeze_across_the_october_dst_change() -> None:
    freeze = [weekend_freeze()]  # first occurrence in March: the rule carries it on
    assert decide(freeze, utc(2027, 10, 29, 15, 59), NORMAL).open  # 17:59 CEST
    friday = decide(freeze, utc(2027, 10, 29, 16), NORMAL)
    # Clocks go back on Sunday 31 October: Monday 06:00 is CET, 05:00 UTC (61 real hours).
    assert not friday.open and friday.next_open == utc(2027, 11, 1, 5)
    sunday = decide(freeze, utc(2027, 10, 31, 12), NORMAL)
    assert sunday.next_open == utc(2027, 11, 1, 5)
    assert sunday.reason.endswith("open again at 2027-11-01 06:00 CET (05:00 UTC)")
    assert not decide(freeze, utc(2027, 11, 1, 4, 59), NORMAL).open
    assert decide(freeze, utc(2027, 11, 1, 5), NORMAL).open
    # The Friday after: winter time, 18:00 CET is 17:00 UTC.
    assert decide(freeze, utc(2027, 11, 5, 16, 59), NORMAL).open
    assert not decide(freeze, utc(2027, 11, 5, 17), NORMAL).open
    [(start, end)] = occurrences(freeze[0], utc(2027, 10, 30), utc(2027, 10, 31))
    assert (start, end - start) == (utc(2027, 10, 29, 16), 61 * H)


def test_a_zoned_window_given_in_utc_keeps_its_local_times() -> None:
    aware = weekend_freeze(datetime(2027, 3, 19, 18, tzinfo=PARIS).astimezone(UTC))
    assert aware == weekend_freeze()  # the same instants
    assert decide([aware], utc(2027, 10, 31, 12), NORMAL).next_open == utc(2027, 11, 1, 5)


def test_no_occurrence_before_the_first() -> None:
    freeze = [weekend_freeze()]
    assert decide(freeze, utc(2027, 3, 13, 12), NORMAL).open  # a Saturday before the first Friday
    assert occurrences(freeze[0], utc(2027, 1, 1), utc(2027, 3, 19)) == []


def test_maintenance_tuesday_and_thursday_nights_never_closes() -> None:
    patching = window(
        "patching", WindowKind.MAINTENANCE, datetime(2027, 3, 2, 22), datetime(2027, 3, 3, 2),
        rrule="FREQ=WEEKLY;BYDAY=TU,TH", timezone="Europe/Paris",
    )  # fmt: skip
    spans = occurrences(patching, utc(2027, 3, 22), utc(2027, 4, 5))
    # Tue 23, Thu 25 (CET: 21:00 UTC), Tue 30, Thu 1 April (CEST: 20:00 UTC): always 4 hours.
    assert [s for s, _ in spans] == [
        utc(2027, 3, 23, 21), utc(2027, 3, 25, 21), utc(2027, 3, 30, 20), utc(2027, 4, 1, 20)
    ]  # fmt: skip
    assert all(e - s == 4 * H for s, e in spans)
    for at in [utc(2027, 3, 23, 22), utc(2027, 3, 31, 0), utc(2027, 4, 1, 23, 59), utc(2027, 3, 24, 12)]:
        for change_type in ChangeType:
            decision = decide([patching], at, change_type)
            assert decision.open and decision.next_open is None
    assert decide([patching], utc(2027, 3, 30, 21), NORMAL).reason == (
        "open; inside maintenance window patching"
    )
    assert decide([patching], utc(2027, 3, 31, 12), NORMAL).reason == "open"


def test_a_blackout_overlapping_a_recurring_freeze_chains_next_open() -> None:
    freeze = weekend_freeze()
    # A release blackout from Monday 05:00 to 10:00 Paris (03:00-08:00 UTC) after the DST change.
    blackout = window("launch", WindowKind.BLACKOUT, utc(2027, 3, 29, 3), utc(2027, 3, 29, 8))
    sunday = decide([freeze, blackout], utc(2027, 3, 28, 12), NORMAL)
    assert sunday.window == "weekend" and sunday.next_open == utc(2027, 3, 29, 8)
    assert sunday.reason.endswith("open again at 2027-03-29 10:00 CEST (08:00 UTC)")
    both = decide([freeze, blackout], utc(2027, 3, 29, 3, 30), NORMAL)
    assert both.window == "launch" and both.kind == WindowKind.BLACKOUT  # blackouts first
    assert both.reason.endswith("open again at 2027-03-29 08:00 UTC")  # the blackout has no zone
    # Touching counts too: a blackout starting as the freeze ends extends the wait.
    touching = window("deploy-stop", WindowKind.BLACKOUT, utc(2027, 3, 29, 4), utc(2027, 3, 29, 6))
    assert decide([freeze, touching], utc(2027, 3, 27), NORMAL).next_open == utc(2027, 3, 29, 6)
    # An emergency ignores the freeze: open on Sunday, and held only by the blackout.
    assert decide([freeze, blackout], utc(2027, 3, 28, 12), EMERGENCY).open
    assert decide([freeze, blackout], utc(2027, 3, 29, 3, 30), EMERGENCY).next_open == utc(2027, 3, 29, 8)


def test_two_recurring_windows_chain() -> None:
    freeze = weekend_freeze()
    monday = window(
        "monday-morning", WindowKind.FREEZE, datetime(2027, 3, 22, 6), datetime(2027, 3, 22, 9),
        rrule="FREQ=WEEKLY", timezone="Europe/Paris",
    )  # fmt: skip
    assert decide([freeze, monday], utc(2027, 10, 30), NORMAL).next_open == utc(2027, 11, 1, 8)


def test_emergency_ignores_recurring_freezes() -> None:
    for at in [utc(2027, 3, 26, 17), utc(2027, 3, 28, 12), utc(2027, 10, 31, 12)]:
        decision = decide([weekend_freeze()], at, EMERGENCY)
        assert decision.open and decision.next_open is None
        assert not decide([weekend_freeze()], at, ChangeType.STANDARD).open


def test_a_chain_longer_than_the_horizon_has_no_known_reopening() -> None:
    every_day = window(
        "forever", WindowKind.BLACKOUT, datetime(2027, 1, 1), datetime(2027, 1, 2),
        rrule="FREQ=DAILY", timezone="Europe/Paris",
    )  # fmt: skip
    decision = decide([every_day], utc(2027, 6, 1), EMERGENCY)
    assert not decision.open and decision.next_open is None
    assert "no reopening known" in decision.reason
    ends = window("ends", WindowKind.BLACKOUT, utc(2027, 1, 1), utc(2027, 1, 2), rrule="FREQ=DAILY;COUNT=40")
    assert decide([ends], utc(2027, 1, 5), NORMAL).next_open == utc(2027, 2, 10)
    # A one-off window longer than the horizon still knows its end.
    long = window("long", WindowKind.BLACKOUT, utc(2027, 1, 1), utc(2029, 1, 1))
    assert decide([long], utc(2027, 1, 5), NORMAL).next_open == utc(2029, 1, 1)


# --- the one-off behaviour of the store's rule, unchanged --------------------------------


def test_no_windows_is_open() -> None:
    decision = decide([], T0, NORMAL)
    assert decision.open and decision.next_open is None and decision.reason == "open"


def test_blackout_closes_every_change_type() -> None:
    launch = [window("launch", WindowKind.BLACKOUT, T0, T0 + 4 * H)]
    for change_type in ChangeType:
        decision = decide(launch, T0 + H, change_type)
        assert not decision.open and decision.next_open == T0 + 4 * H
        assert "blackout 'launch'" in decision.reason
    assert decide(launch, T0 + 4 * H, NORMAL).open  # half-open: the end is already open
    assert decide(launch, T0 - timedelta(seconds=1), NORMAL).open


def test_freeze_stops_normal_and_standard_not_emergency() -> None:
    year_end = [window("year-end", WindowKind.FREEZE, T0, T0 + 48 * H)]
    assert not decide(year_end, T0 + H, NORMAL).open
    assert not decide(year_end, T0 + H, ChangeType.STANDARD).open
    emergency = decide(year_end, T0 + H, EMERGENCY)
    assert emergency.open and emergency.next_open is None


def test_chained_and_overlapping_windows() -> None:
    windows = [
        window("a", WindowKind.BLACKOUT, T0, T0 + 2 * H),
        window("b", WindowKind.FREEZE, T0 + H, T0 + 5 * H),  # overlaps a
        window("c", WindowKind.BLACKOUT, T0 + 5 * H, T0 + 6 * H),  # starts as b ends
        window("d", WindowKind.BLACKOUT, T0 + 7 * H, T0 + 8 * H),  # a gap before it
    ]
    assert decide(windows, T0, NORMAL).next_open == T0 + 6 * H
    # An emergency ignores the freeze, so the chain breaks after blackout a.
    assert decide(windows, T0, EMERGENCY).next_open == T0 + 2 * H
    assert decide(windows, T0 + 6 * H, NORMAL).open


def test_maintenance_is_listed_but_never_closes() -> None:
    decision = decide([window("patching", WindowKind.MAINTENANCE, T0, T0 + 2 * H)], T0 + H, NORMAL)
    assert decision.open and "patching" in decision.reason


def test_naive_times_without_a_zone_are_utc() -> None:
    naive = window("launch", WindowKind.BLACKOUT, datetime(2030, 1, 1, 12), datetime(2030, 1, 1, 14))
    assert decide([naive], T0 + H, NORMAL).next_open == T0 + 2 * H
    assert decide([naive], T0 + H, NORMAL).reason == (
        "blackout 'launch' (launch reason); open again at 2030-01-01 14:00 UTC"
    )


def test_same_decisions_as_the_stores_rule_on_one_off_windows() -> None:
    """Against the rule relman.cmdb exports (the store's until it uses this module)."""
    windows = [
        window("a", WindowKind.BLACKOUT, T0, T0 + 2 * H),
        window("b", WindowKind.FREEZE, T0 + H, T0 + 5 * H),
        window("c", WindowKind.BLACKOUT, T0 + 5 * H, T0 + 6 * H),
        window("m", WindowKind.MAINTENANCE, T0 + 6 * H, T0 + 9 * H),
        window("d", WindowKind.FREEZE, T0 + 7 * H, T0 + 8 * H),
    ]
    for minutes in range(-60, 11 * 60, 20):
        at = T0 + timedelta(minutes=minutes)
        for change_type in ChangeType:
            ours, theirs = decide(windows, at, change_type), relman.cmdb.decide(windows, at, change_type)
            assert ours.model_dump(exclude={"reason"}) == theirs.model_dump(exclude={"reason"})
            assert ours.reason.split("; open again")[0] == theirs.reason.split("; open again")[0]


# --- validation -------------------------------------------------------------------------


def refused(**fields: object) -> str:
    with pytest.raises(ValidationError) as caught:
        window("w", WindowKind.FREEZE, datetime(2027, 3, 19, 18), datetime(2027, 3, 22, 6), **fields)
    return one_line(caught.value)


def test_unknown_timezone_is_one_line() -> None:
    assert refused(timezone="Europe/Pariss") == (
        "timezone: unknown IANA time zone 'Europe/Pariss' (e.g. 'Europe/Paris')"
    )
    assert refused(timezone="../etc/passwd").startswith("timezone: unknown IANA time zone")


@pytest.mark.parametrize(
    "rrule",
    ["every friday", "FREQ=WEEKLY;BYDAY=XX", "FREQ=FORTNIGHTLY", "BYDAY=FR", "", "FREQ=MINUTELY",
     "FREQ=WEEKLY\nDTSTART:20270101", "FREQ=WEEKLY;UNTIL=20270101T000000"],
)  # fmt: skip
def test_bad_rrule_is_one_line(rrule: str) -> None:
    message = refused(rrule=rrule)
    assert message.startswith("rrule: ") and "\n" not in message


def test_rrule_is_kept_in_canonical_form() -> None:
    spec = window("w", WindowKind.FREEZE, T0, T0 + H, rrule="RRULE:byday=TU,TH;freq=weekly;interval=2")
    assert spec.rrule == "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH"


# --- .ics -------------------------------------------------------------------------------


def calendar() -> list[WindowSpec]:
    return [
        weekend_freeze().model_copy(update={"id": "w-1"}),
        window(
            "quarter-end", WindowKind.BLACKOUT, utc(2027, 3, 31, 16), utc(2027, 4, 1, 8),
            service="checkout", environment=Environment.PRODUCTION,
        ),
        window(
            "patching", WindowKind.MAINTENANCE, datetime(2027, 3, 2, 22, tzinfo=PARIS),
            datetime(2027, 3, 3, 2, tzinfo=PARIS), rrule="FREQ=WEEKLY;BYDAY=TU,TH;UNTIL=20271231T230000Z",
            timezone="Europe/Paris", reason="",
        ),
    ]  # fmt: skip


def test_ics_round_trip() -> None:
    ics = to_ics(calendar())
    text = ics.decode()
    assert "DTSTART;TZID=Europe/Paris:20270319T180000" in text
    assert "DTEND;TZID=Europe/Paris:20270322T060000" in text
    assert "BEGIN:VTIMEZONE" in text and "TZID:Europe/Paris" in text
    assert "RRULE:FREQ=WEEKLY;BYDAY=FR" in text and "SUMMARY:freeze: weekend" in text
    assert "CATEGORIES:blackout" in text and "X-RELMAN-SERVICE:checkout" in text
    assert "UID:w-1" in text and "DTSTART:20270331T160000Z" in text
    back = from_ics(ics, created_by="erin")
    assert back == calendar()
    assert to_ics(back) == ics  # and the same bytes again


def test_import_from_another_calendar() -> None:
    ics = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//Example Corp//Change Calendar//EN\r
BEGIN:VEVENT\r
UID:7f3a@example.com\r
DTSTAMP:20270101T000000Z\r
DTSTART;TZID=Europe/Paris:20270319T180000\r
DTEND;TZID=Europe/Paris:20270322T060000\r
RRULE:FREQ=WEEKLY;BYDAY=FR\r
SUMMARY:Weekend change freeze\r
DESCRIPTION:No deploys over the\r
  weekend\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:8b1c@example.com\r
DTSTAMP:20270101T000000Z\r
DTSTART:20271224T000000Z\r
DURATION:P3D\r
SUMMARY:Christmas\r
CATEGORIES:Holiday,BLACKOUT\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:9d2e@example.com\r
DTSTAMP:20270101T000000Z\r
DTSTART;VALUE=DATE:20270501\r
SUMMARY:Maintenance: datacenter move\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:0a0a@example.com\r
DTSTAMP:20270101T000000Z\r
DTSTART:20270601T000000Z\r
DTEND:20270602T000000Z\r
SUMMARY:Cancelled freeze\r
STATUS:CANCELLED\r
END:VEVENT\r
END:VCALENDAR\r
"""
    weekend, christmas, move = from_ics(ics, created_by="erin")
    # No kind named: a freeze (holds normal and standard changes, lets an emergency through).
    assert weekend.kind == WindowKind.FREEZE and weekend.name == "Weekend change freeze"
    assert weekend.reason == "No deploys over the weekend" and weekend.id is None
    assert weekend.timezone == "Europe/Paris" and weekend.rrule == "FREQ=WEEKLY;BYDAY=FR"
    assert decide([weekend], utc(2027, 10, 31, 12), NORMAL).next_open == utc(2027, 11, 1, 5)
    assert christmas.kind == WindowKind.BLACKOUT and christmas.end == utc(2027, 12, 27)
    assert christmas.timezone is None and christmas.service is None
    assert (move.kind, move.name) == (WindowKind.MAINTENANCE, "datacenter move")
    assert (move.start, move.end) == (utc(2027, 5, 1), utc(2027, 5, 2))  # all day, read as UTC
    assert {w.created_by for w in (weekend, christmas, move)} == {"erin"}
    blackout_default = from_ics(ics, created_by="erin", default_kind=WindowKind.BLACKOUT)
    assert blackout_default[0].kind == WindowKind.BLACKOUT


def event(*lines: str) -> bytes:
    body = "\r\n".join(["UID:x@example.com", "DTSTAMP:20270101T000000Z", *lines])
    lines_ = ["BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", body, "END:VEVENT", "END:VCALENDAR", ""]
    return "\r\n".join(lines_).encode()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"this is not a calendar", "not an iCalendar (.ics) file"),
        (b"BEGIN:VEVENT\r\nEND:VEVENT\r\n", "not an iCalendar (.ics) file: no VCALENDAR"),
        (event("DTSTART:20270101T000000Z", "SUMMARY:x"), "event x@example.com: no DTEND or DURATION"),
        (event("DTEND:20270101T000000Z", "SUMMARY:x"), "event x@example.com: no DTSTART"),
        (
            event("DTSTART:20270101T000000Z", "DTEND:20270102T000000Z", "RRULE:FREQ=DAILY",
                  "EXDATE:20270103T000000Z", "SUMMARY:x"),
            "event x@example.com: EXDATE is not supported",
        ),
        (
            event("DTSTART:20270102T000000Z", "DTEND:20270101T000000Z", "SUMMARY:x"),
            "event x@example.com: end: end must be after start",
        ),
        (
            event("DTSTART:20270101T000000Z", "DTEND:20270102T000000Z", "RRULE:FREQ=MINUTELY", "SUMMARY:x"),
            "event x@example.com: rrule: RRULE FREQ must be one of",
        ),
        (
            event("DTSTART;TZID=Mars/Olympus:20270101T000000", "DTEND;TZID=Mars/Olympus:20270102T000000",
                  "SUMMARY:x"),
            "event x@example.com: unknown IANA time zone 'Mars/Olympus'",
        ),
    ],
)  # fmt: skip
def test_malformed_ics_is_one_line(data: bytes, expected: str) -> None:
    with pytest.raises(CmdbInvalid) as caught:
        from_ics(data, created_by="erin")
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message
