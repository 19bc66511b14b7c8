from app import Greeter, Metrics, greeting


def test_greets_by_name():
    assert greeting("Ana") == "Hello, Ana!"


def test_empty_name_greets_the_world():
    assert greeting("  ") == "Hello, world!"


def test_this_release_greets_correctly():
    # Uses the behaviour shipped with the release under test.
    assert greeting("Bob", Greeter().behaviour) == "Hello, Bob!"


def test_metrics_percentiles():
    m = Metrics()
    for ms in range(1, 101):
        m.record(ms / 1000, error=ms % 10 == 0)
    snap = m.snapshot()
    assert snap["requests"] == 100
    assert snap["error_rate"] == 0.1
    assert 49 <= snap["latency_p50_ms"] <= 52
