"""Fixtures of the worker's tests: greeter-db's outbox as this worker expects it, and a stub
greeter. pytest puts this directory on sys.path, so `worker` imports."""

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

CONTRACT = Path(__file__).resolve().parent / "tests" / "outbox.sql"
"""The tables this worker reads (greeter-db's migrations 001 and 003): its side of the contract."""


@pytest.fixture
def outbox(tmp_path):
    db = tmp_path / "greeter.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(CONTRACT.read_text())
    conn.close()
    return db


@pytest.fixture
def greeter():
    """A stand-in greeter answering `Hi <name> (<lang>)`; `/greet?name=fail` answers 500."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_GET(self):
            query = parse_qs(urlsplit(self.path).query)
            name, lang = query.get("name", ["world"])[0], query.get("lang", ["en"])[0]
            status = 500 if name == "fail" else 200
            body = json.dumps(
                {"message": f"Hi {name} ({lang})"} if status == 200 else {"error": "x"}
            ).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
