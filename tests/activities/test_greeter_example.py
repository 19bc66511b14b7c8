"""The example service's own plumbing that the real releases depend on for speed."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.request
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
