"""Request validation: the release names a service the catalog knows; its profile comes back."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.catalog import Catalog, UnknownService
from relman.contracts import Activity, ErrorType, ReleaseRequest, ServiceProfile

log = structlog.get_logger(__name__)


class RequestActivities:
    """Checks release requests against the worker's catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @activity.defn(name=Activity.VALIDATE_REQUEST)
    async def validate_request(self, request: ReleaseRequest) -> ServiceProfile:
        """The service's profile (roster, stages, acceptance); `UnknownService` if absent."""
        try:
            profile = self.catalog.profile(request.service)
        except UnknownService as exc:
            raise ApplicationError(
                str(exc), {"known": exc.known}, type=ErrorType.UNKNOWN_SERVICE, non_retryable=True
            ) from None
        log.info("request.validated", service=request.service, version=request.version)
        return profile
