"""`python probe.py --port P [--port P2 ...] --version V --requests N`: health of the running V.

Finds the first port whose running greeter reports version V (list production's port first:
during a dark launch only staging runs the new version, after go-live production does),
sends it N greetings and prints that process's GET /metrics JSON (cumulative since it
started). Exit status 1 when no port serves V: relman reads that as no data, never a pass.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

import _supervisor as sv


def run() -> int:
    parser = argparse.ArgumentParser(description="probe the running greeter of a version")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    port = next((p for p in args.port if sv.served_version(p) == args.version), None)
    if port is None:
        raise sv.Failure(f"no greeter {args.version} answers on port(s) {', '.join(map(str, args.port))}")
    for i in range(args.requests):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet?name=probe-{i}", timeout=5):
                pass
        except urllib.error.HTTPError:
            pass  # an injected failure: counted by the service's own metrics
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        print(json.dumps(json.loads(resp.read(1 << 20))))
    return 0


if __name__ == "__main__":
    sv.main_guard(run)
