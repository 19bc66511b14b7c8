"""greeter: a tiny real HTTP service with a metrics endpoint.

GET /greet?name=ana      -> {"message": "Hello, ana!", "version": "...", "variant": "..."}
GET /greet?name=ana&lang=fr -> the French greeting, when a greeter-db database is given
GET /metrics             -> requests, errors, error_rate, latency percentiles (ms)
GET /metrics/prometheus  -> the same in Prometheus' text format, labelled by version and
                            variant: `greeter_requests_total{version,variant,code}` and the
                            histogram `greeter_request_duration_seconds{version,variant}`

A version's behaviour comes from `behaviour.json` next to this file (the build copies
`behaviour/<version>.json` there), so releases of the example can misbehave on purpose:
`{"bug": "tests"}` breaks the greeting, `{"error_rate": 0.3}` fails 30% of requests,
`{"latency_ms": 50}` slows every request down, `{"latency_jitter_ms": 10}` adds up to 10 ms
more, uniformly at random.

With `--flags FILE` each request asks a flagd flag (`--flag-key`, default `greeter`) through
the OpenFeature SDK and flagd's in-process provider reading FILE, with the `name` parameter
as targeting key: the variant's value is the version that serves it, and that version's
behaviour comes from `<dir>/<version>/behaviour.json` in the first `--releases` dir holding it
(its own when none does). The provider polls FILE every 100 ms, so a change is served within
about that.

With `--db FILE` (examples/greeter-db's SQLite database) the greeting's wording comes from its
`greetings` table, by the `lang` parameter (default `en`; a language it lacks gets English).
A database file that does not exist yet means no database: the greeter then serves its
built-in English, so it still runs alone. A database without the `greetings` table (a schema
older than this greeter needs) fails the request with 503: deploy greeter-db first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

HERE = Path(__file__).resolve().parent
LATENCY_BUCKETS = (
    *(i / 1000 for i in (1, 2.5, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 125, 150)),
    *(i / 1000 for i in (175, 200, 250, 300, 400, 500, 750, 1000, 2500, 5000)),
)
"""Seconds; 10 ms apart up to 100 ms, so a p95 read from the buckets sees a +50 ms change."""


def load_behaviour(root: Path = HERE) -> dict[str, Any]:
    try:
        data = json.loads((root / "behaviour.json").read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def load_version(root: Path = HERE) -> str:
    try:
        return (root / "VERSION").read_text().strip()
    except FileNotFoundError:
        return "0.0.0-dev"


def greeting(name: str, behaviour: dict[str, Any] | None = None, template: str | None = None) -> str:
    """The greeting for `name` (in `template`'s words when given, `{name}` marking the name);
    the `tests` bug drops the punctuation and the name's case."""
    name = name.strip() or "world"
    if (behaviour or {}).get("bug") == "tests":
        return f"hello {name.lower()}"
    # Not str.format: a template is data, and a name could hold braces.
    return template.replace("{name}", name) if template else f"Hello, {name}!"


class SchemaTooOld(Exception):
    """The greeter-db database lacks what this greeter reads (its migrations have not run)."""


def template_for(db: Path | None, lang: str) -> str | None:
    """The greeting template for `lang` from greeter-db's database; None without a database
    (the file does not exist) or without a row for `lang` (the built-in English serves)."""
    if db is None or not db.is_file():
        return None
    # Read-only: the greeter never writes greeter-db's schema or rows.
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            row = conn.execute("SELECT template FROM greetings WHERE lang = ?", (lang,)).fetchone()
        except sqlite3.OperationalError as exc:
            raise SchemaTooOld(f"greeter-db schema too old: {exc}") from None
    return str(row[0]) if row else None


class Metrics:
    """Request count, errors and latencies since start; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.latencies: list[float] = []

    def record(self, seconds: float, error: bool) -> None:
        with self.lock:
            self.requests += 1
            self.errors += int(error)
            self.latencies.append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            lat = sorted(self.latencies)
            n = self.requests

            def pct(p: float) -> float:
                return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else 0.0

            return {
                "requests": n,
                "samples": n,
                "errors": self.errors,
                "error_rate": round(self.errors / n, 4) if n else 0.0,
                "latency_p50_ms": pct(0.50),
                "latency_p95_ms": pct(0.95),
                "latency_p99_ms": pct(0.99),
                "latency_ms": pct(0.95),
            }


@dataclass(frozen=True)
class Served:
    """Who serves one request: a version, the flag variant that chose it, and its behaviour."""

    version: str
    variant: str
    behaviour: dict[str, Any]


class PromMetrics:
    """The Prometheus metrics of one Greeter, in a registry of its own (tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "greeter_requests",
            "Requests served, by version, flag variant and HTTP status code",
            ["version", "variant", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "greeter_request_duration_seconds",
            "Time to serve a greeting, by version and flag variant",
            ["version", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def record(self, served: Served, seconds: float, code: int) -> None:
        self.requests.labels(served.version, served.variant, str(code)).inc()
        self.duration.labels(served.version, served.variant).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Greeter:
    """The service state: version, behaviour and metrics."""

    def __init__(self, root: Path = HERE, variant: str = "stable", db: Path | None = None) -> None:
        self.db = db
        self.version = load_version(root)
        self.behaviour = load_behaviour(root)
        self.variant = variant
        self.router: FlagRouter | None = None
        self.metrics = Metrics()
        self.prometheus = PromMetrics()
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def serve_for(self, user: str) -> Served:
        """The version and variant that serve `user`'s request."""
        own = Served(self.version, self.variant, self.behaviour)
        return self.router.pick(user) if self.router else own

    def follow_flag(self, flags: Path, flag_key: str = "greeter", releases: list[Path] | None = None) -> None:
        """Serve each request as the flag says (see FlagRouter)."""
        own = Served(self.version, self.variant, self.behaviour)
        self.router = FlagRouter(flags, flag_key, list(releases or []), own)

    def should_fail(self, served: Served | None = None) -> bool:
        # Deterministic per version: exactly round(n * rate) of its first n requests fail.
        served = served or self.serve_for("")
        rate = float(served.behaviour.get("error_rate", 0))
        with self._count_lock:
            n = self._counts.get(served.version, 0)
            self._counts[served.version] = n + 1
        return int((n + 1) * rate) > int(n * rate)


class FlagRouter:
    """Picks each request's version from a flagd flag, through OpenFeature (the service's side
    of relman's exposure)."""

    POLL_MS = 100
    """How often the provider looks at the flags file's mtime: the reload time, about."""

    def __init__(self, flags: Path, flag_key: str, releases: list[Path], own: Served) -> None:
        # Imported here: only a process serving from flags pays for loading the SDK.
        from openfeature import api
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType

        self.flag_key = flag_key
        self.releases = releases
        self.own = own
        self._behaviours: dict[str, dict[str, Any]] = {}
        domain = f"greeter:{flags}:{id(self)}"
        provider = FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(flags), deadline_ms=self.POLL_MS
        )
        # No file yet: serve our own version until it appears (the provider keeps polling).
        with contextlib.suppress(Exception):
            api.set_provider_and_wait(provider, domain=domain)
        self.domain = domain
        self.client = api.get_client(domain=domain)

    def close(self) -> None:
        """Stop the provider's polling (rebinding the domain shuts the old provider down)."""
        from openfeature import api
        from openfeature.provider.no_op_provider import NoOpProvider

        api.set_provider(NoOpProvider(), domain=self.domain)

    def pick(self, user: str) -> Served:
        from openfeature.evaluation_context import EvaluationContext

        details = self.client.get_string_details(
            self.flag_key, self.own.version, EvaluationContext(targeting_key=user)
        )
        if details.error_code or not details.value:
            return self.own  # no flag (yet): this process serves as itself
        version = details.value
        return Served(version, details.variant or "default", self.behaviour(version))

    def behaviour(self, version: str) -> dict[str, Any]:
        if version in self._behaviours:
            return self._behaviours[version]
        for base in self.releases:
            if (base / version / "behaviour.json").is_file():
                found = self._behaviours[version] = load_behaviour(base / version)
                return found
        # Not deployed where we look (yet): our own behaviour, asked again next time.
        return self.own.behaviour


def make_handler(svc: Greeter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, {"version": svc.version, **svc.metrics.snapshot()})
                return
            if url.path == "/metrics/prometheus":
                data = svc.prometheus.exposition()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if url.path != "/greet":
                self._send(404, {"error": "not found"})
                return
            started = time.perf_counter()
            query = parse_qs(url.query)
            name = query.get("name", ["world"])[0]
            lang = query.get("lang", ["en"])[0]
            served = svc.serve_for(name)
            jitter = random.uniform(0, float(served.behaviour.get("latency_jitter_ms", 0)))
            time.sleep((float(served.behaviour.get("latency_ms", 0)) + jitter) / 1000)
            failed = svc.should_fail(served)
            if failed:
                status, body = 500, {"error": "injected failure", "version": served.version}
            else:
                try:
                    message = greeting(name, served.behaviour, template_for(svc.db, lang))
                    status, body = 200, {"message": message, "version": served.version}
                except (SchemaTooOld, sqlite3.Error) as exc:
                    failed = True
                    status, body = 503, {"error": str(exc), "version": served.version}
            body["variant"] = served.variant
            # Recorded before the reply: a client that reads /metrics right after its
            # response must find its own request counted (the handler thread races it).
            elapsed = time.perf_counter() - started
            svc.metrics.record(elapsed, failed)
            svc.prometheus.record(served, elapsed, status)
            self._send(status, body)

    return Handler


def serve(
    port: int = 0,
    root: Path = HERE,
    variant: str = "stable",
    flags: Path | None = None,
    flag_key: str = "greeter",
    releases: list[Path] | None = None,
    db: Path | None = None,
) -> tuple[ThreadingHTTPServer, Greeter]:
    """Start the service on 127.0.0.1:`port` (0 = ephemeral) in a daemon thread."""
    svc = Greeter(root, variant, db)
    if flags is not None:
        svc.follow_flag(flags, flag_key, releases)
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(svc))
    # A short poll interval: `shutdown()` waits for the loop to notice, 0.5 s by default,
    # which was most of the health probe's time and of the integration suite's.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, svc


def main() -> None:
    parser = argparse.ArgumentParser(description="greeter HTTP service")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--variant", default="stable", help="the flag variant this process stands for (its metrics' label)"
    )
    parser.add_argument("--flags", type=Path, help="a flagd flags file: each request's version comes from it")
    parser.add_argument("--flag-key", default="greeter", help="the flag to evaluate (default: greeter)")
    parser.add_argument(
        "--releases",
        type=Path,
        action="append",
        default=[],
        help="a directory of <version>/behaviour.json release folders (repeatable)",
    )
    parser.add_argument(
        "--db",
        type=Path,
        help="greeter-db's SQLite file: greetings by language (none while it does not exist)",
    )
    args = parser.parse_args()
    server, svc = serve(
        args.port,
        variant=args.variant,
        flags=args.flags,
        flag_key=args.flag_key,
        releases=args.releases,
        db=args.db,
    )
    print(f"greeter {svc.version} ({svc.variant}) on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
