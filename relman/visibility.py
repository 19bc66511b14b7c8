"""Search attributes that make releases findable in the Temporal UI, defined once."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.service import RPCError, RPCStatusCode

RELEASE_SERVICE = SearchAttributeKey.for_keyword("ReleaseService")
RELEASE_VERSION = SearchAttributeKey.for_keyword("ReleaseVersion")
RELEASE_PHASE = SearchAttributeKey.for_keyword("ReleasePhase")
RELEASE_CHANGE_TYPE = SearchAttributeKey.for_keyword("ReleaseChangeType")
RELEASE_RISK = SearchAttributeKey.for_keyword("ReleaseRisk")
RELEASE_AWAITING = SearchAttributeKey.for_keyword_list("ReleaseAwaiting")
"""Who or what a release waits for: approvers' names, `window`, `operator`."""
RELEASE_OUTCOME = SearchAttributeKey.for_keyword("ReleaseOutcome")
"""How a closed release ended (`completed`, `rolled_back`, ...): Temporal calls them all
COMPLETED, so this is what "rolled back last week" filters on."""
RELEASE_TRAIN = SearchAttributeKey.for_keyword("ReleaseTrain")
"""The train a workflow is (a train) or belongs to (its components' children)."""

ALL_KEYS = (
    RELEASE_SERVICE,
    RELEASE_VERSION,
    RELEASE_PHASE,
    RELEASE_CHANGE_TYPE,
    RELEASE_RISK,
    RELEASE_AWAITING,
    RELEASE_OUTCOME,
    RELEASE_TRAIN,
)


def _indexed_type(key: SearchAttributeKey) -> IndexedValueType.ValueType:
    return IndexedValueType.ValueType(key.indexed_value_type)


async def register_search_attributes(client: Client, namespace: str | None = None) -> list[str]:
    """Register relman's search attributes on the server; returns the names it added."""
    namespace = namespace or client.namespace
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list attributes, only add them.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {k.name: _indexed_type(k) for k in ALL_KEYS if k.name not in known}
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
