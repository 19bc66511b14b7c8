"""Manifests of one release or of a train (`load_any_manifest`), and the client's refusal of a
train the catalog cannot deliver (`train_problem`): unknown components, cycles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from relman.client import ReleaseClient, load_any_manifest, load_manifest, train_problem
from relman.contracts import ReleaseRequest
from relman.contracts.train import MAX_COMPONENTS, TrainRequest
from relman.errors import RefusedError, RelmanError

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "examples" / "releases"
CATALOG = ROOT / "examples" / "catalog.yaml"
TRAIN = RELEASES / "train-greeter-2.0.yaml"


def write(tmp_path: Path, data: Any, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def train_data(**changes: Any) -> dict[str, Any]:
    return {**yaml.safe_load(TRAIN.read_text()), **changes}


def error_of(path: Path) -> str:
    with pytest.raises(RelmanError) as exc:
        load_any_manifest(path)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_release_manifest_stays_a_release() -> None:
    for path in sorted(RELEASES.glob("greeter-*.yaml")):
        request = load_any_manifest(path)
        assert isinstance(request, ReleaseRequest) and request == load_manifest(path)


def test_the_example_trains_load() -> None:
    train = load_any_manifest(TRAIN)
    assert isinstance(train, TrainRequest)
    assert train.train == "greeter-2-0" and train.requested_by == "pat"
    assert [(c.service, c.version) for c in train.components] == [
        ("greeter-db", "2.0.0"),
        ("greeter", "2.0.0"),
        ("greeter-worker", "2.0.0"),
    ]
    failing = load_any_manifest(RELEASES / "train-greeter-2.1.yaml")
    assert isinstance(failing, TrainRequest) and {c.version for c in failing.components} == {"2.1.0"}


def test_a_train_under_request_loads_too(tmp_path: Path) -> None:
    assert isinstance(load_any_manifest(write(tmp_path, {"request": train_data()})), TrainRequest)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"approver": "bob"}, "approver: Extra inputs are not permitted"),
        ({"service": "greeter"}, "service: Extra inputs are not permitted"),
        ({"train": None}, "train: Input should be a valid string"),
        ({"components": []}, "components: List should have at least 1 item after validation, not 0"),
        ({"components": None}, "components: Input should be a valid list"),
        ({"train": "greeter\nrm"}, "train: "),
        ({"title": "two\nlines"}, "title: "),
    ],
)
def test_bad_train_fields_are_named(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    message = error_of(write(tmp_path, train_data(**changes)))
    assert message.startswith(f"manifest {tmp_path / 'm.yaml'}: {expected}"), message


def test_a_bad_component_is_named_by_its_position(tmp_path: Path) -> None:
    components = train_data()["components"]
    newline = [*components[:2], {**components[2], "service": "greeter-worker\nevil"}]
    assert "components.2.service: " in error_of(write(tmp_path, train_data(components=newline)))
    extra = [{**components[0], "replicas": 3}, *components[1:]]
    assert "components.0.replicas: Extra inputs are not permitted" in error_of(
        write(tmp_path, train_data(components=extra))
    )
    bad_commit = [{**components[0], "commit": "HEAD"}, *components[1:]]
    assert "components.0.commit: " in error_of(write(tmp_path, train_data(components=bad_commit)))


def test_a_component_twice_is_refused(tmp_path: Path) -> None:
    components = train_data()["components"]
    message = error_of(
        write(tmp_path, train_data(components=[*components, {**components[1], "version": "2.0.1"}]))
    )
    assert message.endswith("component(s) listed twice: greeter")


def test_more_than_the_maximum_of_components_is_refused(tmp_path: Path) -> None:
    many = [
        {"service": f"svc-{i:02d}", "version": "1.0.0", "commit": "abcdef1"}
        for i in range(MAX_COMPONENTS + 1)
    ]
    message = error_of(write(tmp_path, train_data(components=many)))
    assert f"components: List should have at most {MAX_COMPONENTS} items" in message
    exactly = write(tmp_path, train_data(components=many[:MAX_COMPONENTS]), "ok.yaml")
    assert len(load_any_manifest(exactly).components) == MAX_COMPONENTS  # type: ignore[union-attr]


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    assert "is not valid YAML at line" in error_of(write(tmp_path, "train: [unclosed\n"))
    assert "must be a mapping of release fields" in error_of(write(tmp_path, "- a\n- b\n"))
    assert error_of(tmp_path / "missing.yaml") == f"manifest {tmp_path / 'missing.yaml'} not found"


# --- the client's check against the catalog ---------------------------------------------------


def test_the_example_train_is_deliverable() -> None:
    train = load_any_manifest(TRAIN)
    assert isinstance(train, TrainRequest)
    assert train_problem(CATALOG, train) is None


def test_an_unknown_component_is_named_with_the_known_ones() -> None:
    train = TrainRequest.model_validate(
        train_data(
            components=[
                {"service": "greeter", "version": "2.0.0", "commit": "abcdef1"},
                {"service": "billing", "version": "1.0.0", "commit": "abcdef1"},
                {"service": "ledger", "version": "1.0.0", "commit": "abcdef1"},
            ]
        )
    )
    assert train_problem(CATALOG, train) == (
        f"unknown services billing, ledger: the catalog {CATALOG} knows greeter, greeter-db, greeter-worker"
    )


def test_the_example_cycle_is_refused_with_its_path() -> None:
    train = load_any_manifest(RELEASES / "train-greeter-cycle.yaml")
    assert isinstance(train, TrainRequest)
    assert train_problem(CATALOG, train) == (
        "train greeter-cycle: dependency cycle: greeter -> greeter-worker -> greeter-db -> greeter"
    )


def test_after_naming_a_service_outside_the_train_is_refused() -> None:
    components = train_data()["components"]
    train = TrainRequest.model_validate(
        train_data(components=[{**components[0], "after": ["greeter-worker"]}, components[1]])
    )
    assert train_problem(CATALOG, train) == (
        "train greeter-2-0: greeter-db after 'greeter-worker': "
        "'greeter-worker' is not a component of this train"
    )


def test_relationships_come_from_the_raw_catalog(tmp_path: Path) -> None:
    """A client without the services' directories orders the train as the worker will: the
    catalog is read, not validated, and a CI target named by its service."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "api": {
                        "workdir": "/nowhere",
                        "relationships": [{"type": "depends_on", "target": "db-ci"}],
                    },
                    "db": {"ci_name": "db-ci", "relationships": [{"type": "depends_on", "target": "api"}]},
                    "odd": {"relationships": ["not a mapping", {"type": "runs_on"}]},
                }
            }
        )
    )
    train = TrainRequest.model_validate(
        train_data(
            train="t",
            tests=[],
            components=[
                {"service": "api", "version": "1.0.0", "commit": "abcdef1"},
                {"service": "db", "version": "1.0.0", "commit": "abcdef1"},
            ],
        )
    )
    assert train_problem(catalog, train) == "train t: dependency cycle: api -> db -> api"
    alone = TrainRequest.model_validate(
        train_data(train="t", tests=[], components=[train.components[0].model_dump()])
    )
    assert train_problem(catalog, alone) is None  # a relationship to a CI outside the train orders nothing


def test_the_client_refuses_before_anything_starts(tmp_path: Path) -> None:
    client = ReleaseClient(None, catalog=CATALOG)  # type: ignore[arg-type]  # no server: checks only
    train = load_any_manifest(RELEASES / "train-greeter-cycle.yaml")
    assert isinstance(train, TrainRequest)
    with pytest.raises(RefusedError, match="dependency cycle: greeter -> greeter-worker"):
        client._check_train(train)
    client._check_train(load_any_manifest(TRAIN))  # type: ignore[arg-type]
    client.catalog = tmp_path / "missing.yaml"
    with pytest.raises(RelmanError, match=r"^RELMAN_CATALOG: "):
        client._check_train(train)


def test_the_readme_train_is_the_example(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text().split("## Release trains", 1)[1]
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    train = load_any_manifest(write(tmp_path, block))
    example = load_any_manifest(TRAIN)
    assert isinstance(train, TrainRequest) and isinstance(example, TrainRequest)
    assert (train.train, train.components, train.title, train.tests) == (
        example.train,
        example.components,
        example.title,
        example.tests,
    )


def test_the_example_trains_name_the_combined_train_suite() -> None:
    for name in ("train-greeter-2.0", "train-greeter-2.1"):
        train = load_any_manifest(RELEASES / f"{name}.yaml")
        assert isinstance(train, TrainRequest) and train.tests == ["combined"], name


def test_an_unknown_train_suite_is_named_with_the_catalogs() -> None:
    train = TrainRequest.model_validate(train_data(tests=["combined", "smoke"]))
    assert train_problem(CATALOG, train) == f"unknown train suite smoke: the catalog {CATALOG} has combined"
    assert train_problem(CATALOG, train.model_copy(update={"tests": []})) is None


def test_a_train_suite_named_twice_or_badly_is_refused(tmp_path: Path) -> None:
    assert error_of(write(tmp_path, train_data(tests=["combined", "combined"]))).endswith(
        "train suite(s) listed twice: combined"
    )
    assert "tests.0" in error_of(write(tmp_path, train_data(tests=["Two words"])))


def test_the_train_suites_are_in_the_request_hash_only_when_named() -> None:
    named = TrainRequest.model_validate(train_data())
    none = named.model_copy(update={"tests": []})
    other = TrainRequest.model_validate(train_data(tests=["other"]))
    assert len({named.content_hash(), none.content_hash(), other.content_hash()}) == 3
    assert (
        none.content_hash()
        == TrainRequest.model_validate({k: v for k, v in train_data().items() if k != "tests"}).content_hash()
    )
