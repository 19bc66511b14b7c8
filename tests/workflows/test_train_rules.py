"""A train's rules as plain functions: its gate, its plan, its merged trust, its backouts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from relman.contracts import (
    ChangeType,
    Decision,
    Delegation,
    DeployRecord,
    Environment,
    Gate,
    GateState,
    PersonTrust,
    Role,
    Trust,
    Vote,
)
from relman.contracts.train_run import ComponentState, ComponentStatus
from relman.workflows import policy
from relman.workflows.trainplan import backout_for, train_plan
from relman.workflows.waves import OrderingError
from tests import people
from tests.workflows.fakes import profile_for as release_profile
from tests.workflows.train_support import RELATIONSHIPS, component, make_train, profile_for

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TRAIN = "train-checkout"
HASH = "b" * 64
PROFILES = {s: profile_for(s) for s in ("db-migration", "api", "worker")}


def _ctx(trust: Trust) -> policy.Context:
    return policy.Context(
        release_id=TRAIN, service="train checkout", requested_by="rita", trust=trust, now=NOW
    )


def _approve(gate_status: object, *names: str) -> object:
    status = gate_status
    ctx = _ctx(policy.merged_trust(p.trust for p in PROFILES.values()))
    for name in names:
        vote = people.signed(
            Vote(gate=Gate.REQUEST, approver=name, decision="approve", approved_hash=HASH), TRAIN, at=NOW
        )
        assert policy.refusal(status, vote, ctx) is None  # type: ignore[arg-type]
        status = policy.record_vote(status, vote, NOW)  # type: ignore[arg-type]
    return status


def test_a_train_gate_needs_every_components_cab() -> None:
    gate = policy.train_gate(Gate.REQUEST, ChangeType.NORMAL, PROFILES, HASH, NOW, "rita")
    assert gate.state is GateState.OPEN and gate.required == 2
    assert gate.eligible == ["alice", "bob", "carol", "dave"]
    assert gate.groups == {
        "db-migration": ["carol", "dave"],
        "api": ["alice", "bob"],
        "worker": ["alice", "bob"],
    }
    # A quorum from one CAB alone does not approve a train that spans two.
    one_cab = _approve(gate, "alice", "bob")
    assert one_cab.state is GateState.OPEN  # type: ignore[attr-defined]
    assert policy.unrepresented(gate.groups, {"alice", "bob"}) == ["db-migration"]
    assert _approve(one_cab, "carol").state is GateState.APPROVED  # type: ignore[attr-defined]
    assert _approve(gate, "alice", "dave").state is GateState.APPROVED  # type: ignore[attr-defined]


def test_the_quorum_is_the_largest_components() -> None:
    strict = PROFILES["api"].model_copy(
        update={
            "trust": PROFILES["api"].trust.model_copy(update={"quorum": 3, "roles": {Role.CAB: people.CAB}})
        }
    )
    gate = policy.train_gate(Gate.PLAN, ChangeType.NORMAL, {**PROFILES, "api": strict}, HASH, NOW, "rita")
    assert gate.required == 3
    assert _approve(gate, "alice", "carol").state is GateState.OPEN  # type: ignore[attr-defined]
    assert _approve(gate, "alice", "carol", "bob").state is GateState.APPROVED  # type: ignore[attr-defined]


def test_the_requester_is_never_eligible_and_a_cab_of_only_the_requester_is_refused() -> None:
    gate = policy.train_gate(Gate.REQUEST, ChangeType.NORMAL, PROFILES, HASH, NOW, "carol")
    assert "carol" not in gate.eligible and gate.groups["db-migration"] == ["dave"]
    assert policy.train_gate_problem(gate) is None
    lonely = PROFILES["db-migration"].model_copy(
        update={"trust": PROFILES["db-migration"].trust.model_copy(update={"roles": {Role.CAB: ["rita"]}})}
    )
    refused = policy.train_gate(
        Gate.REQUEST, ChangeType.NORMAL, {**PROFILES, "db-migration": lonely}, HASH, NOW, "rita"
    )
    assert policy.train_gate_problem(refused) == (
        "gate request: nobody but the requester may approve for db-migration"
    )


def test_a_release_gate_has_no_groups_and_tallies_as_before() -> None:
    gate = policy.open_gate(Gate.REQUEST, ChangeType.NORMAL, release_profile("checkout"), HASH, NOW, "rita")
    assert gate.groups == {}
    assert policy.unrepresented({}, set()) == []


def test_emergency_train_gate_is_the_ecabs() -> None:
    gate = policy.train_gate(Gate.REQUEST, ChangeType.EMERGENCY, PROFILES, HASH, NOW, "rita")
    assert (gate.required, gate.eligible) == (1, ["erin"])


def test_merged_trust_unions_people_keys_and_roles() -> None:
    key_a, key_b = people.PEOPLE["alice"].public, people.PEOPLE["bob"].public
    one = Trust(
        signatures="off", people=[PersonTrust(name="alice", keys=[key_a])], roles={Role.CAB: ["alice"]}
    )
    two = Trust(
        people=[PersonTrust(name="alice", keys=[key_b]), PersonTrust(name="bob", keys=[key_b])],
        roles={Role.CAB: ["bob"], Role.OPERATORS: ["oli"]},
        quorum=3,
    )
    merged = policy.merged_trust([one, two])
    assert merged.signatures == "required" and merged.quorum == 3
    assert merged.keys_of("alice") == [key_a, key_b] and merged.keys_of("bob") == [key_b]
    assert merged.members(Role.CAB) == ["alice", "bob"] and merged.members(Role.OPERATORS) == ["oli"]
    assert merged.change_models == []


def test_a_standard_train_is_refused() -> None:
    request = make_train().model_copy(update={"change_type": ChangeType.STANDARD})
    trust = policy.merged_trust(p.trust for p in PROFILES.values())
    unsigned = _ctx(trust.model_copy(update={"signatures": "off"}))
    assert "normal or emergency" in str(policy.train_request_refusal(request, unsigned))
    assert "not signed" in str(policy.train_request_refusal(make_train(), _ctx(trust)))


def test_the_plan_covers_every_component_the_waves_and_the_backout_order() -> None:
    request = make_train()
    plan = train_plan(request, PROFILES, RELATIONSHIPS)
    assert plan.waves == [["db-migration"], ["api"], ["worker"]]
    assert plan.backout_order == ["worker", "api", "db-migration"]
    assert [c.service for c in plan.components] == ["db-migration", "api", "worker"]
    assert plan.release_plan("api").components[0].name == "api"
    assert "step 2 of 3" in plan.component("api").backout_plan
    # Its hash covers a component's stages, the waves and the order.
    fewer = {
        **PROFILES,
        "worker": PROFILES["worker"].model_copy(update={"stages": PROFILES["worker"].stages[:1]}),
    }
    assert train_plan(request, fewer, RELATIONSHIPS).content_hash() != plan.content_hash()
    assert train_plan(request, PROFILES, []).content_hash() != plan.content_hash()
    assert train_plan(make_train(), PROFILES, RELATIONSHIPS).model_copy(update={}).waves == plan.waves


def test_a_cycle_through_after_is_refused_with_its_path() -> None:
    request = make_train(component("db-migration", after=["worker"]), component("api"), component("worker"))
    with pytest.raises(OrderingError, match="dependency cycle: api -> worker -> db-migration -> api"):
        train_plan(request, PROFILES, RELATIONSHIPS)


def _component(state: ComponentState, **flags: bool) -> ComponentStatus:
    at = NOW
    return ComponentStatus(
        service="api",
        version="2.0.0",
        state=state,
        deploys=[
            DeployRecord(environment=Environment.STAGING, version="2.0.0", previous_version="1.9.0", at=at),
            DeployRecord(
                environment=Environment.PRODUCTION, version="2.0.0", previous_version="1.8.0", at=at
            ),
        ],
        **flags,
    )


def test_a_live_component_backs_out_everything_with_the_versions_it_replaced() -> None:
    undo = backout_for(_component(ComponentState.LIVE, staged=True, exposed=True))
    assert undo is not None
    assert (undo.exposure, undo.production, undo.staging) == (True, True, True)
    assert (undo.production_restore, undo.staging_restore) == ("1.8.0", "1.9.0")


def test_a_failed_launch_that_undid_itself_backs_out_staging_only() -> None:
    undo = backout_for(_component(ComponentState.FAILED, staged=True, exposed=False))
    assert undo is not None and (undo.exposure, undo.production, undo.staging) == (False, False, True)


@pytest.mark.parametrize(
    "status",
    [
        _component(ComponentState.PENDING),
        _component(ComponentState.FAILED, staged=False, exposed=False),
        _component(ComponentState.BACKED_OUT),
        _component(ComponentState.LIVE, staged=True, exposed=True, needs_operator=True),
    ],
    ids=["pending", "failed-and-undone", "backed-out", "needs-operator"],
)
def test_nothing_is_backed_out_twice(status: ComponentStatus) -> None:
    assert backout_for(status) is None


def test_a_delegation_counts_on_a_train_when_it_covers_one_of_its_components() -> None:
    gate = policy.train_gate(Gate.REQUEST, ChangeType.NORMAL, PROFILES, HASH, NOW, "rita")
    trust = policy.merged_trust(p.trust for p in PROFILES.values())
    ctx = policy.Context(
        release_id=TRAIN,
        service="train checkout",
        requested_by="rita",
        trust=trust,
        now=NOW,
        services=("db-migration", "api", "worker"),
    )

    def delegated_vote(services: list[str]) -> Vote:
        delegation = people.signed(
            Delegation(
                delegator="carol",
                delegate="zoe",
                services=services,
                gates=[Gate.REQUEST],
                not_after=NOW + timedelta(days=1),
            ),
            "*",
            at=NOW,
        )
        vote = Vote(
            gate=Gate.REQUEST,
            approver="zoe",
            decision=Decision.APPROVE,
            approved_hash=HASH,
            on_behalf_of="carol",
            delegation=delegation,
        )
        return people.signed(vote, TRAIN, at=NOW)

    assert policy.refusal(gate, delegated_vote(["db-migration"]), ctx) is None
    assert policy.refusal(gate, delegated_vote(["billing"]), ctx) == (
        "carol's delegation does not cover service db-migration, api, worker"
    )
    # A release's context still asks for its one service.
    release_ctx = dataclasses.replace(ctx, services=(), service="checkout")
    assert "does not cover service checkout" in str(
        policy.refusal(gate, delegated_vote(["billing"]), release_ctx)
    )
