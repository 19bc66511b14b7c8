"""Errors of the CMDB store; the activities map them to retryable or not."""

from __future__ import annotations


class CmdbError(Exception):
    """Base of every CMDB failure."""

    type = "CmdbError"


class CmdbUnavailable(CmdbError):
    """The database does not answer or is busy: worth retrying later."""

    type = "CmdbUnavailable"


class CmdbInvalid(CmdbError):
    """The data is refused (unknown CI, bad window, constraint): no retry can fix it."""

    type = "CmdbInvalid"


class CmdbNotFound(CmdbInvalid):
    type = "CmdbNotFound"


class CmdbConflict(CmdbError):
    """An optimistic lock lost: someone else changed the row since it was read."""

    type = "CmdbConflict"
