import json
import urllib.request

import pytest
from app import serve


@pytest.fixture
def base_url():
    server, _ = serve(0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_greet_over_http(base_url):
    status, body = get(f"{base_url}/greet?name=Cleo")
    assert status == 200
    assert body["message"] == "Hello, Cleo!"


def test_metrics_count_requests(base_url):
    for _ in range(3):
        get(f"{base_url}/greet")
    _, metrics = get(f"{base_url}/metrics")
    assert metrics["requests"] == 3
    assert metrics["error_rate"] == 0.0
    assert metrics["latency_p95_ms"] >= 0
