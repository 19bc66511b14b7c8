"""A small load generator for the greeter: steady requests to one or more instances.

    python load.py --target http://127.0.0.1:8001 --target http://127.0.0.1:8002 \\
        --rate 20 --duration 60 --users 1000

Open loop, as real users are: each target gets `rate` requests per second on a fixed
schedule whatever the service's latency, sent by a pool of threads, each request for one of
`users` user keys (`user0`..., then any `--user` named, e.g. an allow-list's) taken
round-robin, so a flag keyed on the user sees the same keys again. At the end it prints one
JSON line: requests, errors (HTTP 5xx) and failures (no answer) per target. Stdlib only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit


def hit(target: str, user: str, timeout: float = 5.0) -> int:
    """One greeting for `user` from `target`: the HTTP status, or 0 without an answer."""
    url = urlsplit(target)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=timeout)
    try:
        conn.request("GET", f"/greet?name={quote(user)}")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def run(
    targets: list[str],
    *,
    rate: float,
    duration: float,
    users: int = 1000,
    named: tuple[str, ...] = (),
    threads: int = 16,
    stop: threading.Event | None = None,
) -> dict[str, dict[str, int]]:
    """Send `rate` requests per second to each target for `duration` seconds (or until
    `stop` is set); the counts per target: requests, ok, errors (5xx), failures (no answer)."""
    if rate <= 0 or duration <= 0 or not targets or users < 1:
        raise ValueError("give targets, a positive rate and duration, and at least one user")
    stop = stop or threading.Event()
    keys = [f"user{i}" for i in range(users)] + list(named)
    counts = {t: Counter[str]() for t in targets}
    lock = threading.Lock()

    def one(target: str, user: str) -> None:
        status = hit(target, user)
        kind = "failures" if status == 0 else "errors" if status >= 500 else "ok"
        with lock:
            counts[target]["requests"] += 1
            counts[target][kind] += 1

    start = time.monotonic()
    period = 1.0 / rate
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as pool:
        tick = 0
        while not stop.is_set():
            due = start + tick * period
            if due - start >= duration:
                break
            wait = due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            for target in targets:
                pool.submit(one, target, keys[tick % len(keys)])
            tick += 1
    return {t: {k: c[k] for k in ("requests", "ok", "errors", "failures")} for t, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="steady load on greeter instances")
    parser.add_argument("--target", action="append", required=True, help="base URL; repeat for several")
    parser.add_argument("--rate", type=float, default=20, help="requests per second per target")
    parser.add_argument("--duration", type=float, default=60, help="seconds")
    parser.add_argument("--users", type=int, default=1000, help="distinct user keys")
    parser.add_argument("--user", action="append", default=[], help="a user key to include; repeat")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    stop = threading.Event()
    # Stopped early (SIGTERM), it still prints what it sent.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        result = run(
            args.target,
            rate=args.rate,
            duration=args.duration,
            users=args.users,
            named=tuple(args.user),
            threads=args.threads,
            stop=stop,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
