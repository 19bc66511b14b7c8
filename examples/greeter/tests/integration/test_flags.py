"""Flag-driven serving: each request's version comes from a flagd flag, read through OpenFeature."""

import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from app import load_version, serve


def flag_file(path, targeting=None, default="previous"):
    flag = {
        "state": "ENABLED",
        "variants": {"new": "9.1.0", "previous": "9.0.0"},
        "defaultVariant": default,
    }
    if targeting is not None:
        flag["targeting"] = targeting
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"flags": {"greeter": flag}}))
    os.replace(tmp, path)


def release(base, version, behaviour):
    (base / version).mkdir(parents=True)
    (base / version / "behaviour.json").write_text(json.dumps(behaviour))


def greet(base_url, name):
    query = urllib.parse.urlencode({"name": name})
    with urllib.request.urlopen(f"{base_url}/greet?{query}", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def flagged(tmp_path):
    flags = tmp_path / "flags.flagd.json"
    release(tmp_path / "production", "9.0.0", {})
    release(tmp_path / "staging", "9.1.0", {"bug": "tests"})
    allow = {"if": [{"in": [{"var": "targetingKey"}, ["alice", "ünï\ncødé"]]}, "new", None]}
    flag_file(flags, allow)
    server, svc = serve(0, flags=flags, releases=[tmp_path / "production", tmp_path / "staging"])
    yield flags, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    svc.router.close()


def test_each_request_is_served_by_the_flags_variant(flagged):
    flags, base_url = flagged
    alice = greet(base_url, "alice")
    assert (alice["version"], alice["variant"], alice["message"]) == ("9.1.0", "new", "hello alice")
    bob = greet(base_url, "bob")
    assert (bob["version"], bob["variant"], bob["message"]) == ("9.0.0", "previous", "Hello, bob!")
    assert greet(base_url, "ünï\ncødé")["variant"] == "new"  # an odd key, allow-listed

    # The kill switch: no targeting, everyone on `previous`, one provider poll later.
    flag_file(flags)
    deadline = time.monotonic() + 5
    while greet(base_url, "alice")["variant"] != "previous":
        assert time.monotonic() < deadline, "the kill switch was not served within 5 s"
        time.sleep(0.01)
    assert greet(base_url, "alice")["version"] == "9.0.0"


def test_without_a_flags_file_the_process_serves_itself(tmp_path):
    server, svc = serve(0, flags=tmp_path / "absent.json")
    try:
        body = greet(f"http://127.0.0.1:{server.server_address[1]}", "alice")
        assert (body["version"], body["variant"]) == (load_version(), "stable")
    finally:
        server.shutdown()
        svc.router.close()
