"""The worker as a process: it reads the database, calls the greeter, prints its metrics."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

RELEASE = Path(__file__).resolve().parents[2]


def test_a_run_prints_its_metrics(outbox, greeter):
    with sqlite3.connect(outbox) as conn:
        conn.execute("INSERT INTO outbox (name, lang) VALUES ('Dee', 'es')")
    conn.close()
    done = subprocess.run(
        [sys.executable, str(RELEASE / "worker.py"), "--greeter", greeter, "--db", str(outbox)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)
    assert (metrics["requests"], metrics["errors"], metrics["error_rate"]) == (1, 0, 0.0)
    assert metrics["latency_ms"] > 0
    with sqlite3.connect(outbox) as conn:
        assert conn.execute("SELECT message FROM outbox").fetchall() == [("Hi Dee (es)",)]
    conn.close()


def test_no_database_is_one_line(tmp_path, greeter):
    done = subprocess.run(
        [sys.executable, str(RELEASE / "worker.py"), "--greeter", greeter, "--db", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"greeter-worker: no greeter-db database at {tmp_path / 'none'}"
