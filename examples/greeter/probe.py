"""Health probe for relman: start this release on an ephemeral port, send traffic, print metrics.

Run from a deployed release folder; prints one JSON object (the service's /metrics).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path

from app import serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--db", type=Path, help="greeter-db's SQLite file the greeter reads (none while it does not exist)"
    )
    parser.add_argument(
        "--lang", action="append", default=[], help="languages the requests ask for in turn (default: en)"
    )
    args = parser.parse_args()
    langs = args.lang or ["en"]
    server, _ = serve(0, db=args.db)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for i in range(args.requests):
            lang = langs[i % len(langs)]
            try:
                with urllib.request.urlopen(f"{base}/greet?name=user{i}&lang={lang}", timeout=5) as resp:
                    resp.read()
            except urllib.error.HTTPError as exc:
                exc.read()
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            print(json.dumps(json.loads(resp.read())), flush=True)
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
