"""Reading a flagd file back through the OpenFeature SDK, as a service does.

`FlagReader` binds a `FlagdProvider` (in-process resolver, FILE source) to an OpenFeature
domain and evaluates through the SDK's client. The provider loads the file when it starts and
then polls its mtime every `poll_ms` (the provider's `deadline_ms`; it reloads when the mtime
grows), so a long-lived reader sees a change within about one poll interval.

`readback_problem` is the pure check relman runs before a bake: every allow-listed key gets
`new`, the share of `new` among synthetic keys matches the percent, every value is the
variant's version and the metadata names this write.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from relman.activities.flagd import NEW, PREVIOUS, WEIGHT_TOTAL, ExposureFlag

DEFAULT_POLL_MS = 100
SIGMAS = 5.0
"""Allowed distance of the sampled share from the percent, in binomial standard deviations:
a correct flag fails the check about once in two million read-backs."""


@dataclass(frozen=True)
class Evaluation:
    """One SDK evaluation: the variant and value served, why, and the flag's metadata."""

    variant: str | None
    value: Any
    reason: str | None = None
    error: str | None = None
    metadata: Mapping[str, Any] | None = None


class FlagReader:
    """An OpenFeature client over one flagd file (a context manager; `close` unbinds it)."""

    _count = 0
    _count_lock = threading.Lock()

    def __init__(self, path: Path, poll_ms: int = DEFAULT_POLL_MS) -> None:
        # Imported here: the SDK and the provider (with grpc) take a moment to import, and only
        # exposure activities and services that read flags need them.
        from openfeature import api
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType

        with FlagReader._count_lock:
            FlagReader._count += 1
            self.domain = f"relman-flags-{FlagReader._count}:{path}"
        self.path = path
        self.provider = FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=poll_ms
        )
        # A missing or unreadable file fails the start; the provider keeps polling for it.
        with contextlib.suppress(Exception):
            api.set_provider_and_wait(self.provider, domain=self.domain)
        self.client = api.get_client(domain=self.domain)

    def evaluate(self, flag_key: str, targeting_key: str) -> Evaluation:
        from openfeature.evaluation_context import EvaluationContext

        details = self.client.get_string_details(flag_key, "", EvaluationContext(targeting_key=targeting_key))
        return Evaluation(
            variant=details.variant,
            value=details.value,
            reason=str(details.reason) if details.reason is not None else None,
            error=f"{details.error_code}: {details.error_message}" if details.error_code else None,
            metadata=dict(details.flag_metadata or {}),
        )

    def close(self) -> None:
        from openfeature import api

        # Rebinding the domain makes the registry shut the provider (and its poller) down. The
        # SDK has no call to forget a domain, so each closed reader leaves one entry bound to
        # the one shared no-op provider.
        api.set_provider(_no_op(), domain=self.domain)

    def __enter__(self) -> FlagReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@functools.cache
def _no_op() -> Any:
    from openfeature.provider.no_op_provider import NoOpProvider

    return NoOpProvider()


def sample_keys(count: int) -> list[str]:
    """Synthetic targeting keys, the same every time (so a read-back is reproducible)."""
    return [f"relman-sample-{i}" for i in range(count)]


def share_tolerance(percent: float, samples: int) -> float:
    """How far (in percentage points) a correct flag's sampled share of `new` may stray."""
    p = min(max(percent / 100, 0.0), 1.0)
    return 100 * (SIGMAS * math.sqrt(p * (1 - p) / samples) + 1 / samples)


@dataclass(frozen=True)
class Readback:
    """The outcome of one read-back: a problem (None when the flag evaluates as written) and
    whether the provider simply has not seen this write yet (worth waiting for)."""

    problem: str | None
    stale: bool = False
    share: float | None = None


def _expected_metadata(flag: ExposureFlag) -> dict[str, Any]:
    return dict(flag.metadata)


def readback_problem(
    flag: ExposureFlag, evaluate: Callable[[str], Evaluation], samples: Iterable[str]
) -> Readback:
    """Check `flag` as the SDK serves it: `evaluate(targeting_key)` is one SDK evaluation."""
    expected = _expected_metadata(flag)
    values = {NEW: flag.version, PREVIOUS: flag.previous}

    def wrong(key: str, got: Evaluation) -> Readback | None:
        if got.error is not None:
            return Readback(f"key {key!r}: the SDK answered {got.error}", stale=True)
        seen = dict(got.metadata or {})
        if any(seen.get(k) != v for k, v in expected.items()):
            return Readback(
                f"the provider serves another write (release {seen.get('release')!r}, "
                f"stage {seen.get('stage')!r}, percent {seen.get('percent')!r}), not "
                f"{flag.release!r} stage {flag.stage!r} at {flag.percent:g}%",
                stale=True,
            )
        if got.variant not in values or got.value != values[got.variant]:
            return Readback(f"key {key!r} got variant {got.variant!r} = {got.value!r}")
        return None

    for key in flag.allow_list:
        got = evaluate(key)
        if problem := wrong(key, got):
            return problem
        if got.variant != NEW:
            return Readback(f"allow-listed key {key!r} got {got.variant!r}, not {NEW!r}")
    allowed = set(flag.allow_list)
    keys = [k for k in samples if k not in allowed]
    new = 0
    for key in keys:
        got = evaluate(key)
        if problem := wrong(key, got):
            return problem
        new += got.variant == NEW
    if not keys:
        return Readback(None)
    share = 100 * new / len(keys)
    target = 100 * flag.weight / WEIGHT_TOTAL
    # At 0% and 100% there is no sampling error: every key must be on one side.
    tolerance = share_tolerance(target, len(keys)) if 0 < flag.weight < WEIGHT_TOTAL else 0.0
    if abs(share - target) > tolerance:
        return Readback(
            f"{share:.2f}% of {len(keys)} sample keys got {NEW!r}, expected {target:g}% (± {tolerance:.2f})",
            share=share,
        )
    return Readback(None, share=share)


def read_back(
    path: Path,
    flag: ExposureFlag,
    samples: int,
    timeout: float,
    poll_ms: int = DEFAULT_POLL_MS,
) -> Readback:
    """Start a provider over `path` and check `flag` through the SDK until it passes, fails
    on a fresh view, or `timeout` seconds pass with the provider not showing this write."""
    keys = sample_keys(samples)
    deadline = time.monotonic() + timeout
    with FlagReader(path, poll_ms=poll_ms) as reader:
        while True:
            result = readback_problem(flag, lambda k: reader.evaluate(flag.key, k), keys)
            if result.problem is None or not result.stale or time.monotonic() >= deadline:
                return result
            time.sleep(poll_ms / 1000 / 2)
