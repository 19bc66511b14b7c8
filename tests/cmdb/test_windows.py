"""Windows that behave: stable ids, colliding windows refused unless replaced, unknown
services refused, removal recorded, recurring zoned windows listed and decided, `.ics`
export and import through the CLI. On real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from relman.cli import app
from relman.cmdb import CiSpec, CmdbNotFound, CmdbStore, WindowSpec
from relman.cmdb.store import AUDIT, WindowCollision
from relman.contracts import ChangeType, Environment, WindowKind, WindowQuery
from tests.cmdb.helpers import BACKENDS, Clock, empty_database, make_store

H = timedelta(hours=1)
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
WEEKEND = dict(
    name="weekend",
    kind=WindowKind.FREEZE,
    service="checkout",
    start=datetime(2027, 3, 19, 18, 0),  # local, Europe/Paris: a Friday
    end=datetime(2027, 3, 22, 6, 0),
    rrule="FREQ=WEEKLY;BYDAY=FR",
    timezone="Europe/Paris",
    reason="weekend freeze",
    created_by="erin",
)


def window(name: str, start: datetime, end: datetime, **kw: object) -> WindowSpec:
    fields: dict[str, object] = dict(
        name=name, kind=WindowKind.FREEZE, service="checkout", start=start, end=end, created_by="erin"
    )
    return WindowSpec.model_validate(fields | kw)


def audit_actions(store: CmdbStore) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [(r.action, r.subject) for r in conn.execute(select(AUDIT.c.action, AUDIT.c.subject))]


# --- the store ------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CmdbStore]:
    with make_store(request.param, tmp_path, request, Clock(T0)) as s:
        yield s


def test_ids_are_stable_and_an_identical_window_is_present(store: CmdbStore) -> None:
    done = store.save_window(window("a", T0, T0 + H))
    assert done.added and done.window.id and len(done.window.id) == 32
    again = store.save_window(window("a", T0, T0 + H))
    assert (again.added, again.window.id) == (False, done.window.id)
    [listed] = store.list_windows()
    assert listed.id == done.window.id
    assert store.get_window(done.window.id) == listed


def test_an_overlapping_window_of_the_same_scope_is_refused_naming_it(store: CmdbStore) -> None:
    quarter = store.save_window(window("quarter-end", T0, T0 + 6 * H, kind=WindowKind.BLACKOUT)).window
    with pytest.raises(WindowCollision) as caught:
        store.add_window(window("short", T0 + H, T0 + H + timedelta(minutes=30), kind=WindowKind.BLACKOUT))
    message = str(caught.value)
    assert quarter.id is not None and quarter.id in message and "\n" not in message
    assert [w.name for w in store.list_windows()] == ["quarter-end"]  # not overwritten
    with pytest.raises(WindowCollision, match="named 'quarter-end' already exists"):
        store.add_window(window("quarter-end", T0 + 9 * H, T0 + 10 * H))
    # Other kind, service, environment, or no overlap: all fine.
    assert store.add_window(window("f", T0 + H, T0 + 2 * H))
    assert store.add_window(window("s", T0 + H, T0 + 2 * H, kind=WindowKind.BLACKOUT, service="search"))
    assert store.add_window(
        window("e", T0, T0 + H, kind=WindowKind.BLACKOUT, environment=Environment.STAGING)
    )
    assert store.add_window(window("after", T0 + 6 * H, T0 + 7 * H, kind=WindowKind.BLACKOUT))  # touches


def test_recurring_windows_collide_on_a_later_occurrence(store: CmdbStore) -> None:
    weekend = store.save_window(WindowSpec.model_validate(WEEKEND)).window
    # Saturday 1 May 2027, 10:00 Paris: inside the weekend's seventh occurrence.
    saturday = window(
        "saturday", datetime(2027, 5, 1, 8, 0, tzinfo=UTC), datetime(2027, 5, 1, 9, 0, tzinfo=UTC)
    )
    with pytest.raises(WindowCollision, match=weekend.id or "-"):
        store.add_window(saturday)
    wednesday = window(
        "wednesday", datetime(2027, 5, 5, 8, 0, tzinfo=UTC), datetime(2027, 5, 5, 9, 0, tzinfo=UTC)
    )
    assert store.add_window(wednesday)


def test_replace_removes_the_others_in_the_audit_log(store: CmdbStore) -> None:
    old = store.save_window(window("six-hours", T0, T0 + 6 * H, kind=WindowKind.BLACKOUT)).window
    done = store.save_window(window("half-hour", T0, T0 + H / 2, kind=WindowKind.BLACKOUT), replace=True)
    assert done.added and [w.id for w in done.replaced] == [old.id]
    assert [w.name for w in store.list_windows()] == ["half-hour"]
    assert audit_actions(store) == [
        ("window.add", "six-hours"),
        ("window.add", "half-hour"),
        ("window.remove", "six-hours"),
    ]


def test_unknown_service_refused_when_services_are_given(store: CmdbStore) -> None:
    with pytest.raises(CmdbNotFound, match="unknown service 'nope'"):
        store.save_window(window("x", T0, T0 + H, service="nope"), services=["checkout"])
    assert store.save_window(window("catalog", T0, T0 + H), services=["checkout"]).added
    store.upsert_ci(CiSpec(name="payments-db", ci_class="database"))
    assert store.save_window(window("ci", T0, T0 + H, service="payments-db"), services=[]).added
    assert store.save_window(window("all", T0, T0 + H, service=None), services=[]).added
    assert store.count("deployment_window") == 3


def test_remove_by_id_records_it(store: CmdbStore) -> None:
    w = store.save_window(window("a", T0, T0 + H)).window
    assert w.id is not None
    assert store.remove_window(w.id, actor="erin") is True
    assert store.remove_window(w.id, actor="erin") is False
    assert store.list_windows() == []
    assert audit_actions(store) == [("window.add", "a"), ("window.remove", "a")]


def test_recurring_zoned_window_listed_and_decided_across_dst(store: CmdbStore) -> None:
    store.add_window(WindowSpec.model_validate(WEEKEND))
    # Saturday 27 March 2027 noon UTC: the occurrence over the March change.
    saturday = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
    assert [w.name for w in store.list_windows(at=saturday)] == ["weekend"]
    assert store.list_windows(at=datetime(2027, 3, 24, 12, 0, tzinfo=UTC)) == []  # a Wednesday
    decision = store.window_decision(
        WindowQuery(
            service="checkout",
            environment=Environment.PRODUCTION,
            change_type=ChangeType.STANDARD,
            at=saturday,
        )
    )
    assert not decision.open and decision.window == "weekend"
    assert decision.next_open == datetime(2027, 3, 29, 4, 0, tzinfo=UTC)  # Monday 06:00 CEST
    emergency = store.window_decision(
        WindowQuery(
            service="checkout",
            environment=Environment.PRODUCTION,
            change_type=ChangeType.EMERGENCY,
            at=saturday,
        )
    )
    assert emergency.open


# --- the CLI --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty CMDB of its own: a SQLite file, or a new PostgreSQL database."""
    with empty_database(request, tmp_path, request.param, "t_win") as url:
        yield url


class Cli:
    def __init__(self, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        catalog = tmp_path / "catalog.yaml"
        catalog.write_text("services:\n  checkout: {}\n  search: {}\n")
        monkeypatch.setenv("RELMAN_CMDB_URL", url)
        monkeypatch.setenv("RELMAN_CATALOG", str(catalog))
        monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "data"))
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(app, ["cmdb", *args])
        assert "Traceback" not in result.output, result.output
        assert result.exit_code == code, result.output
        return result.output

    def add(self, *args: str, code: int = 0) -> str:
        return self("window", "add", "--reason", "r", "--as", "erin", *args, code=code)

    def ids(self) -> dict[str, str]:
        """Window name -> id, from the listing."""
        lines = self("windows").splitlines()[1:]
        return {line.split()[2]: line.split()[0] for line in lines}


@pytest.fixture
def cli(cli_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(cli_db, tmp_path, monkeypatch)


QUARTER = ("--kind", "blackout", "--start", "2027-03-31T18:00", "--end", "2027-04-01T00:00")


def test_cli_add_refuses_duplicates_and_unknown_services_then_replaces(cli: Cli) -> None:
    out = cli.add(*QUARTER, "--service", "checkout", "--name", "quarter-end")
    assert out.startswith("window ") and out.strip().endswith("(quarter-end) added")
    first = cli.ids()["quarter-end"]
    short = ("--kind", "blackout", "--start", "2027-03-31T20:00", "--end", "2027-03-31T20:30")
    out = cli.add(*short, "--service", "checkout", "--name", "short", code=1)
    assert out.count("\n") == 1 and first in out and "--replace" in out
    out = cli.add(*short, "--service", "nope", "--name", "nope", code=1)
    assert out.strip() == ("error: CMDB: unknown service 'nope': not a CI in the CMDB, nor in the catalog")
    out = cli.add(*short, "--service", "checkout", "--name", "short", "--replace")
    assert f"window {first} (quarter-end) removed: replaced" in out and "(short) added" in out
    assert list(cli.ids()) == ["short"]
    store = CmdbStore(cli.url)
    try:
        assert audit_actions(store)[-1] == ("window.remove", "quarter-end")
    finally:
        store.close()


def test_cli_remove_and_both_list_spellings(cli: Cli) -> None:
    cli.add(*QUARTER, "--name", "quarter-end")
    cli.add(
        "--kind", "freeze", "--start", "2027-03-19T18:00", "--end", "2027-03-22T06:00",
        "--rrule", "FREQ=WEEKLY;BYDAY=FR", "--timezone", "Europe/Paris", "--service", "checkout",
        "--name", "weekend",
    )  # fmt: skip
    listing = cli("windows")
    assert cli("window", "list") == listing
    header, *rows = listing.splitlines()
    assert header.split()[:7] == ["ID", "KIND", "NAME", "SERVICE", "ENV", "SCHEDULE", "NEXT"]
    weekend = next(r for r in rows if " weekend " in r)
    assert "FREQ=WEEKLY;BYDAY=FR from 2027-03-19 18:00 for 60:00 Europe/Paris" in weekend
    ids = cli.ids()
    assert cli("window", "remove", ids["quarter-end"], "--as", "erin").strip() == (
        f"window {ids['quarter-end']} (quarter-end) removed"
    )
    out = cli("window", "remove", ids["quarter-end"], "--as", "erin", code=1)
    assert out.strip() == f"error: no deployment window with id {ids['quarter-end']}"
    assert list(cli.ids()) == ["weekend"]


def test_cli_ics_round_trip(cli: Cli, tmp_path: Path, cli_db: str) -> None:
    cli.add(*QUARTER, "--name", "quarter-end", "--environment", "production")
    cli.add(
        "--kind", "freeze", "--start", "2027-03-19T18:00", "--end", "2027-03-22T06:00",
        "--rrule", "FREQ=WEEKLY;BYDAY=FR", "--timezone", "Europe/Paris", "--service", "checkout",
        "--name", "weekend",
    )  # fmt: skip
    exported = tmp_path / "calendar.ics"
    assert cli("windows", "--ics", "-o", str(exported)).strip() == f"2 windows written to {exported}"
    printed = cli.runner.invoke(app, ["cmdb", "windows", "--ics"]).stdout_bytes.decode()
    assert printed.encode() == exported.read_bytes() and printed.endswith("END:VCALENDAR\r\n")
    assert "RRULE:FREQ=WEEKLY;BYDAY=FR" in printed and "TZID=Europe/Paris" in printed
    store = CmdbStore(cli.url)
    try:
        before = store.list_windows()
    finally:
        store.close()

    # Importing into the same CMDB: the same windows are present already.
    out = cli("window", "import", str(exported), "--as", "erin")
    assert out.count("present") == 2 and "2 of 2 events imported" in out

    # Into an empty one: the same windows, ids included.
    for w in before:
        assert w.id is not None
        cli("window", "remove", w.id, "--as", "erin")
    out = cli("window", "import", str(exported), "--as", "erin")
    assert out.count("added") == 2 and "2 of 2 events imported" in out
    store = CmdbStore(cli.url)
    try:
        assert store.list_windows() == before
    finally:
        store.close()

    # An event colliding with a window, and one for an unknown service: refused, said per event.
    other = tmp_path / "other.ics"
    other.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        "BEGIN:VEVENT\r\nUID:1@test\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:blackout: launch\r\n"
        "DTSTART:20270331T190000Z\r\nDTEND:20270331T200000Z\r\nX-RELMAN-ENVIRONMENT:production\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:2@test\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:elsewhere\r\n"
        "DTSTART:20270331T190000Z\r\nDTEND:20270331T200000Z\r\nX-RELMAN-SERVICE:nope\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:3@test\r\nDTSTAMP:20270101T000000Z\r\nSUMMARY:team offsite\r\n"
        "DTSTART:20270405T000000Z\r\nDTEND:20270406T000000Z\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n"
    )
    out = cli("window", "import", str(other), "--as", "erin", code=1)
    lines = out.splitlines()
    assert lines[0].startswith("refused  launch: overlaps blackout window ")
    assert lines[1] == "refused  elsewhere: unknown service 'nope': not a CI in the CMDB, nor in the catalog"
    assert lines[2].startswith("added    ") and lines[2].endswith(" team offsite")
    assert lines[3] == f"1 of 3 events imported from {other}"
    store = CmdbStore(cli.url)
    try:
        offsite = next(w for w in store.list_windows() if w.name == "team offsite")
        assert offsite.kind == WindowKind.FREEZE and offsite.created_by == "erin"  # no kind named: a freeze
    finally:
        store.close()
