"""Request validation: the release names a service the catalog knows; its profile comes back."""

from __future__ import annotations

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from relman.catalog import Catalog, UnknownService
from relman.contracts import Activity, ErrorType, ReleaseRequest, ServiceProfile
from relman.contracts.train import TrainRequest
from relman.contracts.train_run import TrainProfile

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

    @activity.defn(name=Activity.VALIDATE_TRAIN)
    async def validate_train(self, request: TrainRequest) -> TrainProfile:
        """Every component's profile and the catalog's relationships between services; an
        unknown component is `UnknownService`, naming every unknown one."""
        known = set(self.catalog.services)
        unknown = [s for s in request.services if s not in known]
        if unknown:
            raise ApplicationError(
                f"unknown component(s) {', '.join(unknown)}; the catalog knows: {', '.join(sorted(known))}",
                {"unknown": unknown},
                type=ErrorType.UNKNOWN_SERVICE,
                non_retryable=True,
            )
        suites = {s.name for s in self.catalog.train_suites}
        if missing := [name for name in request.tests if name not in suites]:
            raise ApplicationError(
                f"unknown train suite(s) {', '.join(missing)}; "
                f"the catalog has: {', '.join(sorted(suites)) or 'none'}",
                {"unknown": missing},
                type=ErrorType.INVALID_REQUEST,
                non_retryable=True,
            )
        log.info("train.validated", train=request.train, components=len(request.components))
        return TrainProfile(
            profiles={s: self.catalog.profile(s) for s in request.services},
            relationships=self.catalog.service_relationships(),
        )
