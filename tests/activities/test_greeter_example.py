"""The example service's own plumbing that the real releases depend on for speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import ModuleType

from tests.activities.greeter_support import EXAMPLES


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("greeter_app", EXAMPLES / "greeter" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_server_stops_promptly() -> None:
    """`shutdown()` used to wait out serve_forever's 0.5 s poll: ~0.3 s per health probe and test."""
    app = load_app()
    started = time.perf_counter()
    for _ in range(5):
        server, _svc = app.serve(0)
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert json.loads(resp.read())["requests"] == 0
        server.shutdown()
        server.server_close()
    assert time.perf_counter() - started < 0.5


def test_greeter_process_follows_a_flags_file(tmp_path: Path) -> None:
    """`app.py --flags FILE --releases DIR` as a real process: the flag picks each request's version."""
    (tmp_path / "1.3.0").mkdir()
    (tmp_path / "1.3.0" / "behaviour.json").write_text('{"bug": "tests"}')
    flags = tmp_path / "flags.flagd.json"
    flag = {
        "state": "ENABLED",
        "variants": {"new": "1.3.0", "previous": "1.2.0"},
        "defaultVariant": "previous",
        "targeting": {"if": [{"in": [{"var": "targetingKey"}, ["alice"]]}, "new", None]},
    }
    flags.write_text(json.dumps({"flags": {"web": flag}}))
    argv = [sys.executable, "app.py", "--port", "0", "--flags", str(flags), "--flag-key", "web"]
    proc = subprocess.Popen(
        [*argv, "--releases", str(tmp_path)],
        cwd=EXAMPLES / "greeter",
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])

        def greet(name: str) -> dict[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/greet?name={name}", timeout=5) as resp:
                body: dict[str, str] = json.loads(resp.read())
                return body

        assert greet("alice") == {"message": "hello alice", "version": "1.3.0", "variant": "new"}
        assert greet("bob") == {"message": "Hello, bob!", "version": "1.2.0", "variant": "previous"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
