"""Pure ordering of a release train: dependency waves, backout order and lease order.

A train's components are delivered in waves: a component goes in the first wave after every
component it depends on. The edges come from the CMDB's relationships between the train's
own components (`api depends_on db` and `app runs_on host` both mean the target goes first)
and from the manifest's extra `after:` ordering. Relationships to CIs outside the train order
nothing: they are already there.

Plain functions over plain data (no temporalio, no I/O), so the train workflow, the plan,
the CLI and the tests all ask the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from graphlib import CycleError, TopologicalSorter

ORDERING_RELATIONSHIPS = frozenset({"depends_on", "runs_on"})
"""Relationship types whose target must be delivered before their source."""


class OrderingError(ValueError):
    """The train cannot be ordered: an unknown component or a dependency cycle."""


def dependencies(
    components: Iterable[str],
    relationships: Iterable[tuple[str, str, str]],
    after: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, set[str]]:
    """Each component's prerequisites inside the train.

    `relationships` are `(source, type, target)` triples as the CMDB holds them; `after` is the
    manifest's extra ordering (component -> the components it must follow), and naming a
    component that is not in the train there is refused.
    """
    names = list(components)
    members = set(names)
    if len(members) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise OrderingError(f"component(s) listed twice: {', '.join(twice)}")
    needs: dict[str, set[str]] = {name: set() for name in names}
    for source, kind, target in relationships:
        if kind in ORDERING_RELATIONSHIPS and source in members and target in members and source != target:
            needs[source].add(target)
    for name, before in (after or {}).items():
        if name not in members:
            raise OrderingError(f"after: {name!r} is not a component of this train")
        for other in before:
            if other not in members:
                raise OrderingError(f"{name} after {other!r}: {other!r} is not a component of this train")
            if other == name:
                raise OrderingError(f"{name} is listed after itself")
            needs[name].add(other)
    return needs


def waves(needs: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Components grouped into waves, each after all it depends on; names sorted in a wave.

    A cycle is refused with its path named (`api -> worker -> api`).
    """
    sorter: TopologicalSorter[str] = TopologicalSorter({k: set(v) for k, v in needs.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = list(exc.args[1])
        # graphlib gives each node before the one it must precede, from a node back to itself;
        # start the path at its smallest name so the message is stable.
        cycle = cycle[:-1]
        start = cycle.index(min(cycle))
        path = cycle[start:] + cycle[:start] + [cycle[start]]
        raise OrderingError(f"dependency cycle: {' -> '.join(path)}") from None
    result: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        result.append(ready)
        sorter.done(*ready)
    return result


def backout_order(wave_list: list[list[str]]) -> list[str]:
    """The order to undo a train: the last wave first, and within a wave the reverse of delivery."""
    return [name for wave in reversed(wave_list) for name in reversed(wave)]


def lease_order(services: Iterable[str]) -> list[str]:
    """One global order (sorted names) in which every train takes its leases.

    Two trains sharing services then always ask for them in the same order, so neither can
    hold one the other waits for while waiting for one the other holds: no deadlock.
    """
    return sorted(set(services))
