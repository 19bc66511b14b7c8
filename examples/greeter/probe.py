"""Health probe for relman: start this release on an ephemeral port, send traffic, print metrics.

Run from a deployed release folder; prints one JSON object (the service's /metrics).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from app import serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    server, _ = serve(0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for i in range(args.requests):
            try:
                with urllib.request.urlopen(f"{base}/greet?name=user{i}", timeout=5) as resp:
                    resp.read()
            except urllib.error.HTTPError as exc:
                exc.read()
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            print(json.dumps(json.loads(resp.read())), flush=True)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
