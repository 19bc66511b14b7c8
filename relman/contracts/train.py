"""Contracts of a release train: several components (service + version) released as one.

One request, signed once, names every component; the CAB approves the whole, and the train's
plan hash covers every component's stages, the waves and the backout order, so a vote binds to
the entire train. Each component later runs as its own release (a child workflow) whose request
is derived from the train's (`TrainRequest.component_request`).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, model_validator

from relman.contracts.base import (
    ChangeType,
    CommitSha,
    LongText,
    Model,
    ServiceName,
    ShortText,
    Slug,
    UserName,
    Version,
)
from relman.contracts.governance import Signed, Statement
from relman.contracts.release import ReleaseRequest, TimeWindow, content_hash, request_statement

MAX_COMPONENTS = 20
"""Components per train: the benchmark's size, and a bound on the plan a CAB can read."""


class TrainComponent(Model):
    """One component of a train: a catalog service at a version built from a commit."""

    service: ServiceName
    version: Version
    commit: CommitSha
    after: list[ServiceName] = Field(default_factory=list, max_length=MAX_COMPONENTS)
    """Components of this train it must follow, beyond what the CMDB's relationships say."""
    allow_downgrade: bool = False


class TrainRequest(Signed):
    """What a platform team asks for when several components must go out together."""

    train: Slug
    """The train's name (e.g. `checkout-2026-12`); its release id derives from it."""
    components: list[TrainComponent] = Field(min_length=1, max_length=MAX_COMPONENTS)
    change_type: ChangeType = ChangeType.NORMAL
    requested_by: UserName
    title: ShortText
    description: LongText = ""
    committed_at: datetime | None = None
    target_window: TimeWindow | None = None

    @model_validator(mode="after")
    def _components_once(self) -> TrainRequest:
        services = [c.service for c in self.components]
        twice = sorted({s for s in services if services.count(s) > 1})
        if twice:
            raise ValueError(f"component(s) listed twice: {', '.join(twice)}")
        return self

    @property
    def services(self) -> list[str]:
        return [c.service for c in self.components]

    def content_hash(self) -> str:
        """Stable hash of the whole train (without its proof): the request gate's votes bind to it."""
        return content_hash(self, exclude={"proof"})

    def statement(self, release_id: str, issued_at: datetime, nonce: str) -> Statement:
        return request_statement(self, release_id, issued_at, nonce)

    def component_request(self, service: str) -> ReleaseRequest:
        """The release request of one component, as the train's child runs it (unsigned: the
        train's signed request and its gates stand for it)."""
        component = next(c for c in self.components if c.service == service)
        return ReleaseRequest(
            service=component.service,
            version=component.version,
            change_type=self.change_type,
            requested_by=self.requested_by,
            title=self.title,
            description=self.description,
            commit=component.commit,
            committed_at=self.committed_at,
            target_window=self.target_window,
            allow_downgrade=component.allow_downgrade,
        )
