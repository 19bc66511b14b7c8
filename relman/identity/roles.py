"""Who may decide a gate, and how many must: one rule for the workflow and for `relman verify`."""

from __future__ import annotations

from relman.contracts import ChangeType, Gate, ReleaseRequest, Role, Trust


def gate_policy(gate: Gate, change_type: ChangeType, trust: Trust) -> tuple[int, list[str]]:
    """(approvals required, eligible members) of a gate; (0, []) when the gate is skipped.

    standard: pre-approved (a change model of the catalog), no CAB gate and no plan gate.
    normal: a quorum of the CAB at the request and plan gates.
    emergency: one ECAB member now (request and plan), the CAB quorum retrospectively.
    marginal health: any one CAB or ECAB member decides.
    """
    cab = trust.members(Role.CAB)
    ecab = trust.members(Role.ECAB) or cab
    if gate is Gate.MARGINAL:
        return 1, sorted(set(cab) | set(ecab))
    if change_type is ChangeType.STANDARD:
        return 0, []
    if change_type is ChangeType.EMERGENCY:
        if gate is Gate.RETRO:
            return trust.quorum, cab
        return 1, ecab
    if gate is Gate.RETRO:
        return 0, []
    return trust.quorum, cab


def change_model_problem(request: ReleaseRequest, trust: Trust) -> str | None:
    """Why a request's change type and change model do not match what the catalog pre-approves.

    Only a change model the catalog declares for the service makes a change `standard`, and
    only for the people the model names as its requesters.
    """
    model = trust.change_model(request.change_model)
    if request.change_type is not ChangeType.STANDARD:
        if request.change_model is not None:
            return f"change model {request.change_model} is for standard changes, not {request.change_type}"
        return None
    if request.change_model is None:
        return "a standard change names the catalog's change model it follows (change_model)"
    if model is None:
        known = ", ".join(m.name for m in trust.change_models) or "none"
        return f"{request.service} has no change model {request.change_model} (declared: {known})"
    if request.requested_by not in model.requesters:
        return f"{request.requested_by} may not request change model {model.name}"
    return None
