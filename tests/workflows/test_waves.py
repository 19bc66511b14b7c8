"""The train's ordering rules as plain functions: waves, cycles, unknown names, backout, leases."""

from __future__ import annotations

import pytest

from relman.workflows.waves import OrderingError, backout_order, dependencies, lease_order, waves

RELS = [
    ("api", "depends_on", "db-migration"),
    ("worker", "depends_on", "api"),
    ("api", "runs_on", "local-host"),  # outside the train: orders nothing
]


def test_three_components_go_in_dependency_waves() -> None:
    needs = dependencies(["worker", "api", "db-migration"], RELS)
    assert waves(needs) == [["db-migration"], ["api"], ["worker"]]
    assert backout_order(waves(needs)) == ["worker", "api", "db-migration"]


def test_independent_components_share_a_wave_sorted_by_name() -> None:
    needs = dependencies(["web", "api", "db-migration", "docs"], [("api", "depends_on", "db-migration")])
    assert waves(needs) == [["db-migration", "docs", "web"], ["api"]]
    assert backout_order(waves(needs)) == ["api", "web", "docs", "db-migration"]


def test_a_single_component_is_one_wave() -> None:
    assert waves(dependencies(["greeter"], [])) == [["greeter"]]


def test_manifest_after_adds_ordering() -> None:
    needs = dependencies(["api", "docs"], [], after={"docs": ["api"]})
    assert waves(needs) == [["api"], ["docs"]]


def test_a_cycle_is_refused_with_its_path() -> None:
    rels = [("api", "depends_on", "worker"), ("worker", "depends_on", "db"), ("db", "depends_on", "api")]
    with pytest.raises(OrderingError) as err:
        waves(dependencies(["api", "worker", "db"], rels))
    # delivery order: api before db before worker before api
    assert str(err.value) == "dependency cycle: api -> db -> worker -> api"


def test_a_cycle_through_the_manifest_is_refused_too() -> None:
    with pytest.raises(OrderingError, match="dependency cycle: api -> worker -> api"):
        waves(dependencies(["api", "worker"], [("worker", "depends_on", "api")], after={"api": ["worker"]}))


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ({"ghost": ["api"]}, "after: 'ghost' is not a component of this train"),
        ({"api": ["ghost"]}, "api after 'ghost': 'ghost' is not a component of this train"),
        ({"api": ["api"]}, "api is listed after itself"),
        ({"api": ["db\nx"]}, "not a component of this train"),
    ],
)
def test_bad_manifest_ordering_is_refused(after: dict[str, list[str]], message: str) -> None:
    with pytest.raises(OrderingError, match=message.replace("\n", "\\n")):
        dependencies(["api", "db"], [], after=after)


def test_a_component_listed_twice_is_refused() -> None:
    with pytest.raises(OrderingError, match="listed twice: api"):
        dependencies(["api", "db", "api"], [])


def test_self_relationships_order_nothing() -> None:
    assert waves(dependencies(["api"], [("api", "depends_on", "api")])) == [["api"]]


def test_two_trains_take_shared_leases_in_the_same_order() -> None:
    first = lease_order(["worker", "api", "db-migration"])
    second = lease_order(["api", "billing", "worker"])
    shared = [s for s in first if s in second]
    assert shared == [s for s in second if s in first] == ["api", "worker"]
