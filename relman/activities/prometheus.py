"""A small client of Prometheus' HTTP API: instant and range queries, nothing else.

Blocking (urllib): the health activity calls it in a thread. Every failure is one
`PrometheusError` line naming what went wrong; an empty result is not an error but no series.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

MAX_RESPONSE = 8 << 20
"""Bytes read from one answer: a range query of a few series is far below this."""


class PrometheusError(Exception):
    """A query that could not be answered: unreachable server, refused query, odd answer."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split())[:500])


@dataclass(frozen=True)
class Series:
    """One series of a result: its labels and its (unix time, value) points, oldest first."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)

    def values(self) -> list[float]:
        """The finite values (NaN, from 0/0 in a ratio, and infinities are not measurements)."""
        return [v for _, v in self.points if math.isfinite(v)]


def _number(text: Any) -> float:
    try:
        return float(text)  # Prometheus writes "NaN", "+Inf", "-Inf" as float() reads them
    except (TypeError, ValueError):
        raise PrometheusError(f"value {str(text)[:40]!r} is not a number") from None


def _point(pair: Any) -> tuple[float, float]:
    if not (isinstance(pair, list) and len(pair) == 2):
        raise PrometheusError(f"point {str(pair)[:60]!r} is not [time, value]")
    return float(pair[0]), _number(pair[1])


def parse_result(body: Any) -> list[Series]:
    """The series of a `/api/v1/query` or `/api/v1/query_range` answer (a scalar is one series)."""
    if not isinstance(body, dict):
        raise PrometheusError("the answer is not a JSON object")
    if body.get("status") != "success":
        raise PrometheusError(
            f"query refused: {body.get('errorType', 'error')}: {body.get('error', 'no reason given')!s}"
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return [Series({}, [_point(result)])]
    if kind not in ("vector", "matrix") or not isinstance(result, list):
        raise PrometheusError(f"unexpected result type {str(kind)[:20]!r}")
    series = []
    for item in result:
        if not isinstance(item, dict):
            raise PrometheusError("a series is not a JSON object")
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        if kind == "vector":
            points = [_point(item.get("value"))]
        else:
            points = [_point(p) for p in item.get("values") or []]
        series.append(Series(labels, points))
    return series


@dataclass(frozen=True)
class Prometheus:
    """Queries one Prometheus server at `address` (e.g. http://127.0.0.1:9090)."""

    address: str
    timeout: float = 10.0

    def _get(self, path: str, params: dict[str, str]) -> list[Series]:
        # POST, form-encoded: long PromQL does not fit every server's URL limit.
        url = self.address.rstrip("/") + path
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                raw = resp.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            # A refused query (400, 422) still carries Prometheus' JSON error.
            raw = exc.read(MAX_RESPONSE)
            try:
                return parse_result(json.loads(raw))
            except (ValueError, PrometheusError) as inner:
                raise PrometheusError(f"{url}: HTTP {exc.code}: {inner}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"{url} unreachable: {reason}") from None
        try:
            return parse_result(json.loads(raw))
        except ValueError:
            raise PrometheusError(f"{url}: the answer is not JSON") from None

    def query(self, promql: str, at: float | None = None) -> list[Series]:
        """An instant query (at `at`, a unix time; default now)."""
        params = {"query": promql, "timeout": f"{self.timeout:g}s"}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._get("/api/v1/query", params)

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """A range query: one point per `step` seconds from `start` to `end` (unix times)."""
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
            "timeout": f"{self.timeout:g}s",
        }
        return self._get("/api/v1/query_range", params)


def one_value(series: list[Series]) -> float | None:
    """The single number of an instant query; None without a series or a finite value.

    A query giving several series is refused: which of them is the release's is for the
    query to say (aggregate it, e.g. `sum(...)`), not for relman to guess.
    """
    if len(series) > 1:
        raise PrometheusError(f"the query gave {len(series)} series; aggregate it to one (sum, max, ...)")
    values = series[0].values() if series else []
    return values[-1] if values else None


def one_series(series: list[Series]) -> list[float]:
    """The finite values of a range query's single series; [] without a series."""
    if len(series) > 1:
        raise PrometheusError(f"the query gave {len(series)} series; aggregate it to one (sum, max, ...)")
    return series[0].values() if series else []
