"""The train request contract and the catalog's relationships as a train orders them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relman.catalog import load_catalog, people_names
from relman.contracts.train import MAX_COMPONENTS, TrainComponent, TrainRequest
from relman.identity.keys import WORKER, ensure_keys
from relman.workflows.waves import dependencies, waves

ROOT = Path(__file__).resolve().parent.parent


def _train(**changes: object) -> TrainRequest:
    data: dict[str, object] = {
        "train": "checkout-2026-12",
        "requested_by": "pat",
        "title": "checkout: api, worker and the schema together",
        "components": [
            {"service": "db-migration", "version": "3.0.0", "commit": "a1b2c3d"},
            {"service": "api", "version": "2.1.0", "commit": "b2c3d4e"},
            {"service": "worker", "version": "2.1.0", "commit": "c3d4e5f", "after": ["api"]},
        ],
    }
    data.update(changes)
    return TrainRequest.model_validate(data)


def test_the_hash_covers_every_component() -> None:
    train = _train()
    bumped = train.model_copy(
        update={
            "components": [*train.components[:2], train.components[2].model_copy(update={"version": "2.1.1"})]
        }
    )
    assert train.content_hash() != bumped.content_hash()
    assert train.content_hash() == _train().content_hash()


def test_a_component_listed_twice_is_refused() -> None:
    twice = [{"service": "api", "version": "1.0.0", "commit": "a1b2c3d"}] * 2
    with pytest.raises(ValidationError, match="component\\(s\\) listed twice: api"):
        _train(components=twice)


@pytest.mark.parametrize(
    "bad",
    [
        {"components": []},
        {
            "components": [
                {"service": f"s{i}", "version": "1.0.0", "commit": "a1b2c3d"}
                for i in range(MAX_COMPONENTS + 1)
            ]
        },
        {"train": "bad name\nwith newline"},
        {"components": [{"service": "api", "version": "1.0.0", "commit": "a1b2c3d", "shell": "rm -rf /"}]},
    ],
)
def test_bad_trains_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _train(**bad)


def test_a_component_request_is_the_train_request_for_one_service() -> None:
    request = _train().component_request("worker")
    assert (request.service, request.version, request.commit) == ("worker", "2.1.0", "c3d4e5f")
    assert request.requested_by == "pat" and request.proof is None


def test_a_component_carries_its_own_ordering() -> None:
    train = _train()
    after = {c.service: c.after for c in train.components}
    assert waves(dependencies(train.services, [], after)) == [["api", "db-migration"], ["worker"]]
    assert TrainComponent(service="xy", version="1.0.0", commit="a1b2c3d").after == []


def test_catalog_relationships_name_services(tmp_path: Path) -> None:
    example = ROOT / "examples" / "catalog.yaml"
    ensure_keys(tmp_path / "keys", [*people_names(example), WORKER])
    catalog = load_catalog(example, data_dir=tmp_path)
    assert ("greeter", "runs_on", "local-host") in catalog.service_relationships()
