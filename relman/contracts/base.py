"""Typed contracts shared by the workflow, activities, CMDB and CLI.

This module imports nothing of relman but its leaf `relman.errors`, so every other module
may import it. All models are strict: unknown fields are refused and every string is bounded,
so bad input fails with an error naming the field before anything is recorded.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from relman.errors import ContractError

# --- names and identifiers -------------------------------------------------

TASK_QUEUE = "relman"
WORKFLOW_NAME = "ReleaseWorkflow"


def _sentence_pattern(regex: str, rule: str) -> AfterValidator:
    """A pattern whose refusal reads as a sentence (`must be ...`), not as the regex."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {rule}")
        return value

    return AfterValidator(check)


# Control characters (C0, DEL, C1) and the format characters that reorder or hide text
# (bidi overrides, zero-width): in free text they forge lines and colours on a terminal.
_FORGING = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_FORGING_MULTILINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why free text is refused (a control character or escape sequence), or None."""
    found = (_FORGING_MULTILINE if multiline else _FORGING).search(value)
    if found is None:
        return None
    return f"must not contain control characters or escape sequences (found {found.group()!r})"


def _clean(multiline: bool) -> AfterValidator:
    def check(value: str) -> str:
        if problem := text_problem(value, multiline=multiline):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


ServiceName = Annotated[
    str,
    _sentence_pattern(r"[a-z][a-z0-9-]{1,62}", "lower-case letters, digits or '-', 2-63 characters"),
]
"""Lower-case service name from the catalog, e.g. `checkout`."""
Version = Annotated[
    str,
    _sentence_pattern(
        r"[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]{1,40})?",
        "a semantic version such as 2.4.1 or 2.5.0-rc.1",
    ),
    StringConstraints(max_length=64),
]
"""Semantic version, e.g. `2.4.1` or `2.5.0-rc.1`; no slashes, no shell characters."""
UserName = Annotated[
    str,
    _sentence_pattern(
        r"[a-z][a-z0-9._-]{1,63}", "lower-case letters, digits, '.', '_' or '-', 2-64 characters"
    ),
]
"""A person's login, e.g. `alice`."""
CommitSha = Annotated[str, _sentence_pattern(r"[0-9a-f]{7,40}", "7-40 lower-case hex digits")]
RELEASE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,127}$"
ReleaseId = Annotated[
    str,
    _sentence_pattern(
        RELEASE_ID_PATTERN[1:-1],
        "3-128 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), _clean(multiline=False)
]
"""One line: titles, reasons."""
LongText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000), _clean(multiline=True)]
"""Several lines (descriptions, backout plans): newlines and tabs, no other control characters."""
Comment = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000), _clean(multiline=False)]
"""One line of free text: vote comments, notes."""
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000), _clean(multiline=False)
]
"""A required one-line reason (operator actions, rejections)."""
Sha256 = Annotated[str, _sentence_pattern(r"[0-9a-f]{64}", "a sha256 digest (64 lower-case hex digits)")]
Slug = Annotated[
    str, _sentence_pattern(r"[a-z0-9][a-z0-9-]{0,62}", "lower-case letters, digits or '-', 1-63 characters")
]
"""A short name (change models, windows, stages)."""


def release_id_problem(release_id: str) -> str | None:
    """Why `release_id` cannot name a release (it keys every record), or None."""
    if re.fullmatch(RELEASE_ID_PATTERN, release_id):
        return None
    return (
        f"release id {release_id[:80]!r} is invalid: use 3-128 lower-case letters, digits, "
        "'.', '_' or '-', starting with a letter or digit"
    )


def release_id_for(service: str, version: str) -> str:
    """The default workflow id of a release: one release per service + version."""
    return f"release-{service}-{version}".lower().replace("+", "-")


def train_id_for(name: str) -> str:
    """The workflow id of a release train: one train per name."""
    return f"train-{name}".lower()


class Model(BaseModel):
    """Base of every contract: strict about unknown fields, frozen where it matters.

    Constructed with bad values (`ReleaseRequest(version="latest")`), a contract raises a
    one-line `ContractError` (a RelmanError that is still a pydantic ValidationError).
    `model_validate` and `model_validate_json` raise pydantic's own ValidationError, as
    Temporal's payload conversion expects.
    """

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError.of(exc) from None


# --- domain enums ----------------------------------------------------------


class ChangeType(StrEnum):
    STANDARD = "standard"
    NORMAL = "normal"
    EMERGENCY = "emergency"


class Gate(StrEnum):
    REQUEST = "request"
    """CAB (or ECAB) decision on the change request."""
    PLAN = "plan"
    """Approval of one specific release plan hash."""
    RETRO = "retro"
    """Retrospective CAB approval of an emergency change, before close."""
    MARGINAL = "marginal"
    """A human decision on a dark-launch stage whose health was marginal."""


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class GateState(StrEnum):
    PENDING = "pending"
    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SKIPPED = "skipped"
    WITHDRAWN = "withdrawn"
    """The release ended (rejected elsewhere, aborted, failed) before this gate decided."""


class Phase(StrEnum):
    REQUESTED = "requested"
    AWAITING_CAB = "awaiting_cab"
    PLANNING = "planning"
    AWAITING_PLAN_APPROVAL = "awaiting_plan_approval"
    BUILDING = "building"
    TESTING = "testing"
    DARK_LAUNCH = "dark_launch"
    DEPLOYING = "deploying"
    REVIEWING = "reviewing"
    CLOSING = "closing"
    COMPENSATING = "compensating"
    CLOSED = "closed"


class Outcome(StrEnum):
    COMPLETED = "completed"
    COMPLETED_WITH_ISSUES = "completed_with_issues"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class ConflictMode(StrEnum):
    """What another open release on a related CI (or a window on one) does to a release."""

    OFF = "off"
    WARN = "warn"
    """Reported in the status and the UI details; the release goes on."""
    BLOCK = "block"
    """The release waits as for a closed window until the conflict is gone (or overridden)."""


class StatusSource(StrEnum):
    """Who answered a status: the workflow itself, or the records left when no worker answers."""

    WORKFLOW = "workflow"
    """The live `status` query: complete and current."""
    RECORDS = "records"
    """Rebuilt from the server's description, search attributes and memo, and the CMDB:
    no worker answered, so gates' votes, stages and running steps may be missing."""


class CloseCode(StrEnum):
    """The CMDB's close code of a change, one per terminal outcome."""

    SUCCESSFUL = "successful"
    SUCCESSFUL_WITH_ISSUES = "successful_with_issues"
    UNSUCCESSFUL = "unsuccessful"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ABORTED = "aborted"


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NO_DATA = "no_data"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Criticality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    MISSION_CRITICAL = "mission_critical"


class Environment(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


class WindowKind(StrEnum):
    MAINTENANCE = "maintenance"
    """A planned maintenance period: recorded and listed, it does not close deployment."""
    BLACKOUT = "blackout"
    """No deployments while a blackout is active."""
    FREEZE = "freeze"
    """Change freeze: no deployments except emergency changes."""


class Activity(StrEnum):
    """Registered names of relman's activities; workflow and worker share them."""

    VALIDATE_REQUEST = "validate_request"
    VALIDATE_TRAIN = "validate_train"
    OPEN_CHANGE = "open_change"
    UPDATE_CHANGE = "update_change"
    CLOSE_CHANGE = "close_change"
    CHECK_WINDOW = "check_window"
    BUILD_PACKAGE = "build_package"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    RUN_TESTS = "run_tests"
    RUN_TRAIN_TESTS = "run_train_tests"
    SET_EXPOSURE = "set_exposure"
    ACQUIRE_LEASE = "acquire_lease"
    RELEASE_LEASE = "release_lease"
    CHECK_HEALTH = "check_health"
    NOTIFY = "notify"
    RECORD_EVENT = "record_event"
    WRITE_EVIDENCE = "write_evidence"
    OPEN_TRAIN = "open_train"
    UPDATE_TRAIN = "update_train"
    CLOSE_TRAIN = "close_train"
    WRITE_TRAIN_EVIDENCE = "write_train_evidence"


class Message(StrEnum):
    """Names of the workflow's signals, updates and queries; the client uses these, not strings."""

    # signals: fire-and-forget, as any Temporal client can send; refusals land in the status
    APPROVE = "approve"
    REJECT = "reject"
    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    ABORT = "abort"
    OVERRIDE_WINDOW = "override_window"
    AMEND_PLAN = "amend_plan"
    FEEDBACK = "feedback"
    # updates: validated, an immediate yes or no; a refusal leaves no history
    DECIDE = "decide"
    OPERATE = "operate"
    AMEND = "amend"
    # queries
    STATUS = "status"
    HISTORY = "history"


class ErrorType(StrEnum):
    """`ApplicationError.type` of failures that no retry can fix."""

    UNKNOWN_SERVICE = "UnknownService"
    INVALID_REQUEST = "InvalidRequest"
    BUILD_FAILED = "BuildFailed"
    PACKAGE_INVALID = "PackageInvalid"
    TESTS_FAILED = "TestsFailed"
    DEPLOY_FAILED = "DeployFailed"
    HEALTH_FAILED = "HealthFailed"
    EXPOSURE_MISMATCH = "ExposureMismatch"
    """A flag that does not evaluate through the OpenFeature SDK as relman wrote it."""
    ENVIRONMENT_LOCKED = "EnvironmentLocked"
    CATALOG_INVALID = "CatalogInvalid"
    REFUSED = "Refused"
    """A message the workflow refused (signature, role, state); nothing was recorded."""
    RELEASE_FAILED = "ReleaseFailed"
    """A failed change (rolled back, or needing an operator) ends its run as failed, so Temporal's
    own failure views find it; the details carry the final ReleaseStatus."""
