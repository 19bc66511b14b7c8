"""validate_train: every component's profile and the catalog's relationships, or the unknown named."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from relman.activities.requests import RequestActivities
from relman.client import load_any_manifest
from relman.contracts import ChangeType, ErrorType, Gate
from relman.contracts.train import TrainComponent, TrainRequest
from relman.workflows import policy
from relman.workflows.trainplan import train_plan

from .greeter_support import example_catalog

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def train(*services: str) -> TrainRequest:
    return TrainRequest(
        train="t1",
        components=[TrainComponent(service=s, version="1.1.0", commit="abc1234") for s in services],
        requested_by="pat",
        title="t",
    )


async def test_validate_train_returns_profiles_and_relationships(tmp_path: Path) -> None:
    acts = RequestActivities(example_catalog(tmp_path))
    found = await ActivityEnvironment().run(acts.validate_train, train("greeter"))
    assert list(found.profiles) == ["greeter"] and found.profiles["greeter"].trust.quorum == 2
    assert ("greeter", "runs_on", "local-host") in found.relationships


async def test_validate_train_names_every_unknown_component(tmp_path: Path) -> None:
    acts = RequestActivities(example_catalog(tmp_path))
    with pytest.raises(ApplicationError) as exc:
        await ActivityEnvironment().run(acts.validate_train, train("checkout", "greeter", "ledger"))
    assert exc.value.type == ErrorType.UNKNOWN_SERVICE and exc.value.non_retryable
    assert exc.value.message.startswith("unknown component(s) checkout, ledger; the catalog knows: ")
    assert "greeter" in exc.value.message


async def test_the_example_train_orders_and_gates_by_the_catalog(tmp_path: Path) -> None:
    request = load_any_manifest(ROOT / "examples" / "releases" / "train-greeter-2.0.yaml")
    assert isinstance(request, TrainRequest)
    acts = RequestActivities(example_catalog(tmp_path))
    found = await ActivityEnvironment().run(acts.validate_train, request)
    plan = train_plan(request, found.profiles, found.relationships)
    assert plan.waves == [["greeter-db"], ["greeter"], ["greeter-worker"]]
    assert plan.backout_order == ["greeter-worker", "greeter", "greeter-db"]
    gate = policy.train_gate(Gate.REQUEST, ChangeType.NORMAL, found.profiles, "a" * 64, NOW, "pat")
    assert set(gate.groups) == {"greeter-db", "greeter", "greeter-worker"}
    assert "pat" not in gate.eligible and all(gate.groups.values())
