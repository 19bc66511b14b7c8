"""greeter-worker: sends the greetings waiting in greeter-db's outbox, worded by the greeter.

python worker.py --greeter http://127.0.0.1:8080 --db ENV/greeter.sqlite [--batch 100]

Each pending outbox row (name, lang) is sent to the greeter's `GET /greet?name=..&lang=..`; the
message it answers is written back with the time sent. A row whose request fails stays pending
for the next run. Prints one JSON object: requests, errors, error_rate, latency_ms (p95).

So it depends on both: greeter-db's `outbox` table (migration 003, greeter-db 2.0.0) and the
greeter's HTTP API with `lang` (greeter 2.0.0 reading greeter-db's `greetings`).

`behaviour.json` next to this file makes a release misbehave on purpose: `{"bug": "encoding"}`
puts the name into the URL unquoted, so every name with a space fails (the tests only use
one-word names, so it passes them and shows only under real traffic).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from http.client import InvalidURL
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_behaviour(root: Path = HERE) -> dict[str, Any]:
    try:
        data = json.loads((root / "behaviour.json").read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def greet_url(base: str, name: str, lang: str, behaviour: dict[str, Any] | None = None) -> str:
    if (behaviour or {}).get("bug") == "encoding":
        return f"{base}/greet?name={name}&lang={lang}"
    return f"{base}/greet?{urllib.parse.urlencode({'name': name, 'lang': lang})}"


def pending(conn: sqlite3.Connection, limit: int) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT id, name, lang FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return [(int(i), str(n), str(lang)) for i, n, lang in rows]


def send(url: str, timeout: float = 5) -> str:
    """The greeter's message for one request; raises on any failure."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    message = body.get("message")
    if not isinstance(message, str) or not message:
        raise ValueError(f"no message in the greeter's answer: {body}")
    return message


def run(db: Path, greeter: str, batch: int = 100, behaviour: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send up to `batch` pending greetings; the run's metrics."""
    behaviour = load_behaviour() if behaviour is None else behaviour
    errors, latencies, last_error = 0, [], ""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = pending(conn, batch)
        for row_id, name, lang in rows:
            started = time.perf_counter()
            try:
                message = send(greet_url(greeter.rstrip("/"), name, lang, behaviour))
            except (OSError, ValueError, InvalidURL, urllib.error.URLError) as exc:
                errors += 1
                last_error = f"{name!r}: {exc}"
            else:
                with conn:  # one transaction per row: a crash never loses a sent message
                    conn.execute(
                        "UPDATE outbox SET message = ?, sent_at = ? WHERE id = ?",
                        (message, datetime.now(UTC).isoformat(), row_id),
                    )
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    n = len(rows)
    result: dict[str, Any] = {
        "requests": n,
        "samples": n,
        "errors": errors,
        "error_rate": round(errors / n, 4) if n else 0.0,
        "latency_ms": round(latencies[int(0.95 * (n - 1))], 3) if n else 0.0,
    }
    if last_error:
        result["last_error"] = last_error[:200]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="send greeter-db's pending greetings through the greeter")
    parser.add_argument("--greeter", required=True, help="the greeter's base URL")
    parser.add_argument("--db", type=Path, required=True, help="greeter-db's SQLite file")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    if not args.db.is_file():
        raise SystemExit(f"greeter-worker: no greeter-db database at {args.db}")
    print(json.dumps(run(args.db, args.greeter, args.batch)), flush=True)


if __name__ == "__main__":
    main()
