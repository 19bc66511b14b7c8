"""Exposure: a real flags file, sticky cohorts, the kill switch."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from relman.activities.exposure import FLAGS_FILE, ExposureActivities, in_cohort
from relman.contracts import Environment, ExposureInput

from .greeter_support import example_catalog

USERS = [f"user-{i}" for i in range(5000)]


def test_cohorts_are_sticky_and_nested() -> None:
    one = {u for u in USERS if in_cohort(u, 1, [], "greeter")}
    five = {u for u in USERS if in_cohort(u, 5, [], "greeter")}
    quarter = {u for u in USERS if in_cohort(u, 25, [], "greeter")}
    assert one <= five <= quarter  # growing a stage never drops anyone
    assert one == {u for u in USERS if in_cohort(u, 1, [], "greeter")}  # same answer every time
    assert 20 <= len(one) <= 90 and 180 <= len(five) <= 320 and 1100 <= len(quarter) <= 1400
    assert {u for u in USERS if in_cohort(u, 1, [], "other-salt")} != one


def test_allow_list_and_kill_switch() -> None:
    assert in_cohort("alice", 0, ["alice"], "greeter")
    assert not in_cohort("bob", 0, ["alice"], "greeter")
    assert not any(in_cohort(u, 0, [], "greeter") for u in USERS)
    assert all(in_cohort(u, 100, [], "greeter") for u in USERS)


def exposure(percent: float, allow: list[str] | None = None, step: str = "stage") -> ExposureInput:
    return ExposureInput(
        release_id="release-greeter-1.3.0",
        step=step,
        service="greeter",
        environment=Environment.PRODUCTION,
        version="1.3.0",
        percent=percent,
        allow_list=allow or [],
    )


async def test_set_exposure_writes_the_flags_file_idempotently(tmp_path: Path) -> None:
    catalog = example_catalog(tmp_path / "data")
    acts = ExposureActivities(catalog)
    flags_path = catalog.service("greeter").env_dir(Environment.PRODUCTION) / FLAGS_FILE
    env = ActivityEnvironment()

    first = await env.run(acts.set_exposure, exposure(0, ["alice", "bob"], step="stage:allow-list"))
    assert first.changed
    flags = json.loads(flags_path.read_text())["greeter"]
    assert flags["version"] == "1.3.0" and flags["allow_list"] == ["alice", "bob"] and flags["enabled"]

    again = await env.run(acts.set_exposure, exposure(0, ["bob", "alice"], step="stage:allow-list"))
    assert not again.changed

    await env.run(acts.set_exposure, exposure(5, step="stage:five"))
    flags = json.loads(flags_path.read_text())["greeter"]
    assert flags["percent"] == 5 and flags["updated_by"] == "release-greeter-1.3.0/stage:five"

    killed = await env.run(acts.set_exposure, exposure(0, step="kill"))
    assert killed.changed and killed.percent == 0
    flags = json.loads(flags_path.read_text())["greeter"]
    assert not flags["enabled"]
    assert not any(in_cohort(u, flags["percent"], flags["allow_list"], flags["salt"]) for u in USERS)
    assert [p.name for p in flags_path.parent.iterdir() if p.name.startswith(".flags")] == []
