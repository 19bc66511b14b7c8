"""The catalog as the step activities see it: a service it lacks is a failure no retry fixes."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from relman.catalog import Catalog, ServiceSpec, UnknownService
from relman.contracts import ErrorType


def service_spec(catalog: Catalog, service: str) -> ServiceSpec:
    """The catalog entry of `service`; a non-retryable `UnknownService` failure without one."""
    try:
        return catalog.service(service)
    except UnknownService as exc:
        raise ApplicationError(str(exc), type=ErrorType.UNKNOWN_SERVICE, non_retryable=True) from None
