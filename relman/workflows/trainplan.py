"""The plan of a release train, and what a child undoes: pure functions of plain data.

The CAB approves one plan for the whole train: each component's stages and acceptance (from
the catalog, as a release of that service would run), the dependency waves, the backout order
and the train's own acceptance. Nothing here talks to Temporal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from relman.contracts import AcceptanceCriteria, Environment, ServiceProfile
from relman.contracts.train import TrainRequest
from relman.contracts.train_run import Backout, ComponentPlan, ComponentStatus, TrainPlan
from relman.workflows.policy import check_stages
from relman.workflows.waves import backout_order, dependencies, waves


def train_waves(request: TrainRequest, relationships: Iterable[tuple[str, str, str]]) -> list[list[str]]:
    """The train's dependency waves (`OrderingError` names a cycle or an unknown `after:`)."""
    after = {c.service: c.after for c in request.components if c.after}
    return waves(dependencies(request.services, relationships, after))


def strictest(criteria: Iterable[AcceptanceCriteria]) -> AcceptanceCriteria:
    """The train's acceptance: every component's criteria at once."""
    items = list(criteria)
    return AcceptanceCriteria(
        min_pass_rate=max(c.min_pass_rate for c in items),
        max_error_rate=min(c.max_error_rate for c in items),
        max_latency_ms=min(c.max_latency_ms for c in items),
    )


def train_plan(
    request: TrainRequest,
    profiles: Mapping[str, ServiceProfile],
    relationships: Iterable[tuple[str, str, str]],
) -> TrainPlan:
    """The plan the train's plan gate approves (`OrderingError`/`ValueError` if it cannot be)."""
    wave_list = train_waves(request, relationships)
    order = backout_order(wave_list)
    parts = []
    for component in request.components:
        profile = profiles[component.service]
        step = order.index(component.service) + 1
        parts.append(
            ComponentPlan(
                service=component.service,
                version=component.version,
                stages=check_stages(profile.stages),
                acceptance=profile.acceptance,
                backout_plan=(
                    f"Backout step {step} of {len(order)}: exposure of {component.service} "
                    f"{component.version} to 0%; production switched back to the previous version "
                    "and verified; staging restored."
                ),
            )
        )
    return TrainPlan(
        components=parts,
        waves=wave_list,
        backout_order=order,
        acceptance=strictest(p.acceptance for p in profiles.values()),
        target_window=request.target_window,
    )


def backout_for(component: ComponentStatus) -> Backout | None:
    """What a BACKOUT child must undo for a component, or None when nothing is left.

    A child that failed undid its own steps (a failed launch its exposure and production
    deploy, a failed preparation its staging deploy); one cut short (the train aborted or was
    cancelled) may have done any of them, so they are undone through each deploy's own record
    (a deploy that never ran is left alone). A component whose own undo failed waits for an
    operator: nothing is tried twice.
    """
    if component.needs_operator or not (component.staged or component.exposed):
        return None
    staging = component.deployed(Environment.STAGING)
    production = component.deployed(Environment.PRODUCTION)
    return Backout(
        exposure=component.exposed,
        production=component.exposed,
        production_restore=production.previous_version if production and component.exposed else None,
        staging=component.staged,
        staging_restore=staging.previous_version if staging and component.staged else None,
    )
