"""Who may decide a gate, and how many must: one rule for the workflow and for `relman verify`."""

from __future__ import annotations

from relman.contracts import ChangeType, Gate, Role, Trust


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
