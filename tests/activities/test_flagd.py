"""flagd flag definitions, evaluated through the real OpenFeature SDK and in-process provider.

10,000 synthetic targeting keys per stage: the share of `new` is within 1 point of the stage's
percent, a key in `new` stays there as the stage grows, allow-listed keys always get `new`, and
after the kill switch every key gets `previous` within the provider's reload time, which is
measured here (file written -> the SDK serves the change) and printed.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pytest

from relman.activities import flagd
from relman.activities.flag_reader import (
    DEFAULT_POLL_MS,
    Evaluation,
    FlagReader,
    read_back,
    readback_problem,
    sample_keys,
)

KEYS = [f"user-{i}" for i in range(10_000)]
ALLOW = ("alice", "bob")
STAGES = [("allow-list", 0.0, ALLOW), ("one", 1.0, ALLOW), ("five", 5.0, ALLOW), ("quarter", 25.0, ALLOW)]


def flag(percent: float, stage: str, allow: tuple[str, ...] = (), **kw: str) -> flagd.ExposureFlag:
    fields = {"key": "greeter", "release": "release-greeter-1.3.0", "version": "1.3.0", "previous": "1.2.0"}
    fields.update(kw)
    return flagd.ExposureFlag(percent=percent, allow_list=allow, digest="d" * 64, stage=stage, **fields)


def write(path: Path, f: flagd.ExposureFlag) -> None:
    flagd.write_document(path, flagd.with_flag(flagd.read_document(path), f))


def wait_for(reader: FlagReader, f: flagd.ExposureFlag, timeout: float = 5.0) -> float:
    """Seconds from now until the reader's SDK answers with this write's metadata."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        got = reader.evaluate(f.key, "probe")
        if (got.metadata or {}).get("stage") == f.stage and got.error is None:
            return time.monotonic() - start
        time.sleep(0.002)
    raise AssertionError(f"the provider did not serve stage {f.stage} within {timeout}s")


def variants(reader: FlagReader, keys: list[str]) -> dict[str, str | None]:
    return {k: reader.evaluate("greeter", k).variant for k in keys}


def test_ten_thousand_keys_through_the_sdk_at_each_stage(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    write(path, STAGE0 := flag(0.0, "allow-list", ALLOW))
    reloads: list[float] = []
    previous_new: set[str] = set()
    with FlagReader(path) as reader:
        wait_for(reader, STAGE0)
        for stage, percent, allow in [*STAGES, ("go-live", 100.0, ())]:
            f = flag(percent, stage, allow)
            write(path, f)
            reloads.append(wait_for(reader, f))
            served = variants(reader, [*KEYS, *ALLOW])
            assert all(served[a] == flagd.NEW for a in ALLOW), stage
            new = {k for k in KEYS if served[k] == flagd.NEW}
            assert {served[k] for k in KEYS} <= {flagd.NEW, flagd.PREVIOUS}
            share = 100 * len(new) / len(KEYS)
            print(f"stage {stage}: {share:.2f}% new (target {percent:g}%)")
            assert abs(share - percent) <= 1.0, (stage, share)
            assert previous_new <= new, f"{len(previous_new - new)} keys left `new` at {stage}"
            previous_new = new
        kill = flag(0.0, "exposure-off")
        write(path, kill)
        reloads.append(wait_for(reader, kill))
        served = variants(reader, [*KEYS, *ALLOW])
        assert set(served.values()) == {flagd.PREVIOUS}
        assert reader.evaluate("greeter", "user-1").value == "1.2.0"
        print(
            f"kill switch: served {reloads[-1] * 1000:.0f} ms after the write, "
            f"then all {len(served)} keys `previous`"
        )
    print(
        f"reload (write -> SDK serves it, poll {DEFAULT_POLL_MS} ms): median "
        f"{statistics.median(reloads) * 1000:.0f} ms, max {max(reloads) * 1000:.0f} ms over {len(reloads)}"
    )
    assert max(reloads) < 1.0


def test_reload_time_of_a_long_lived_provider(tmp_path: Path) -> None:
    """What a service sees: a change written while its provider runs, served one poll later."""
    path = tmp_path / flagd.FLAGS_FILE
    write(path, flag(0.0, "s0"))
    reloads = []
    with FlagReader(path) as reader:
        wait_for(reader, flag(0.0, "s0"))
        for i in range(1, 16):
            f = flag(float(i), f"s{i}")
            time.sleep(0.013 * i % 0.1)  # writes land at varied points of the poll cycle
            write(path, f)
            reloads.append(wait_for(reader, f))
    ms = sorted(r * 1000 for r in reloads)
    print(f"reload over {len(ms)} changes: median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms")
    assert statistics.median(ms) < 2 * DEFAULT_POLL_MS and ms[-1] < 1000


def test_kill_switch_and_full_exposure_need_no_targeting() -> None:
    killed = flagd.definition(flag(0.0, "exposure-off"))
    assert "targeting" not in killed and killed["defaultVariant"] == flagd.PREVIOUS
    full = flagd.definition(flag(100.0, "go-live"))
    assert "targeting" not in full and full["defaultVariant"] == flagd.NEW
    one = flagd.definition(flag(1.0, "one"))
    assert one["targeting"] == {"fractional": [["new", 100], ["previous", 9900]]}
    assert flagd.definition(flag(0.01, "tiny"))["targeting"]["fractional"][0] == ["new", 1]
    assert one["metadata"]["release"] == "release-greeter-1.3.0" and one["metadata"]["stage"] == "one"


def test_every_write_moves_the_mtime_forward_so_providers_reload(tmp_path: Path) -> None:
    """The provider reloads only on a larger mtime: a file stamped in the future (a clock set
    back, coarse timestamps) must not hide the next write, e.g. the kill switch."""
    path = tmp_path / flagd.FLAGS_FILE
    write(path, flag(25.0, "quarter"))
    ahead = time.time_ns() + 100 * 10**9
    os.utime(path, ns=(ahead, ahead))
    with FlagReader(path) as reader:
        write(path, kill := flag(0.0, "exposure-off"))
        assert path.stat().st_mtime_ns > ahead
        wait_for(reader, kill)
        assert reader.evaluate("greeter", "user-1").variant == flagd.PREVIOUS


def test_schema_refuses_an_invalid_document_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    write(path, flag(5.0, "five"))
    before = path.read_bytes()
    bad = flagd.with_flag(flagd.read_document(path), flag(5.0, "five"))
    bad["flags"]["greeter"]["targeting"]["fractional"][0][1] = "half"  # a weight must be a number
    with pytest.raises(flagd.FlagdError) as refused:
        flagd.write_document(path, bad)
    assert "\n" not in str(refused.value) and "fractional/0/1" in str(refused.value)
    bad["flags"]["greeter"] = {"state": "ON", "variants": {"new": "1"}, "defaultVariant": "new"}
    with pytest.raises(flagd.FlagdError, match="state: 'ON' is not one of"):
        flagd.write_document(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [flagd.FLAGS_FILE]  # no temp file left


def test_a_file_that_is_not_a_flag_document_is_named(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    path.write_text("{not json")
    with pytest.raises(flagd.FlagdError, match="not a flagd JSON document"):
        flagd.read_document(path)
    path.write_text('{"flags": []}')
    with pytest.raises(flagd.FlagdError, match="no `flags` object"):
        flagd.read_document(path)
    assert flagd.read_document(tmp_path / "missing.json") == flagd.empty_document()


def test_two_services_share_one_environment_file(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    write(path, flag(5.0, "five"))
    write(
        path,
        flag(
            25.0, "quarter", key="billing", release="release-billing-2.0.0", version="2.0.0", previous="1.9.0"
        ),
    )
    doc = json.loads(path.read_text())
    assert sorted(doc["flags"]) == ["billing", "greeter"]
    with FlagReader(path) as reader:
        assert reader.evaluate("greeter", "user-1").metadata["percent"] == 5.0
        billing = reader.evaluate("billing", "user-1")
        assert billing.value in ("2.0.0", "1.9.0") and billing.metadata["release"] == "release-billing-2.0.0"
    # Rewriting one service's flag keeps the other's as it was.
    write(path, flag(0.0, "exposure-off"))
    assert json.loads(path.read_text())["flags"]["billing"] == doc["flags"]["billing"]


def test_a_release_keeps_the_previous_it_captured_and_the_next_captures_its_own(tmp_path: Path) -> None:
    doc = flagd.with_flag(flagd.empty_document(), flag(1.0, "one"))
    assert flagd.kept_previous(doc, "greeter", "release-greeter-1.3.0") == "1.2.0"
    # Another release (or another flag) captures anew: nothing is kept for it.
    assert flagd.kept_previous(doc, "greeter", "release-greeter-1.4.0") is None
    assert flagd.kept_previous(doc, "billing", "release-greeter-1.3.0") is None


def test_odd_targeting_keys_evaluate_and_stay_put(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    odd = ["line\nbreak", "ünïcødé-用户-😀", " spaced ", "tab\there", '"quoted"', "x" * 2000]
    write(path, flag(50.0, "half", ("ünïcødé-用户-😀",)))
    with FlagReader(path) as reader:
        first = {k: reader.evaluate("greeter", k) for k in odd}
        assert all(e.error is None and e.variant in (flagd.NEW, flagd.PREVIOUS) for e in first.values())
        assert first["ünïcødé-用户-😀"].variant == flagd.NEW  # an allow-listed unicode key
        assert {k: reader.evaluate("greeter", k).variant for k in odd} == {
            k: e.variant for k, e in first.items()
        }
        # No targeting key at all: fractional has nothing to hash, the default variant serves.
        assert reader.evaluate("greeter", "").variant == flagd.PREVIOUS


def test_read_back_passes_a_written_flag_and_refuses_a_tampered_one(tmp_path: Path) -> None:
    path = tmp_path / flagd.FLAGS_FILE
    f = flag(5.0, "five", ALLOW)
    write(path, f)
    ok = read_back(path, f, 2000, timeout=5)
    assert ok.problem is None and ok.share is not None and abs(ok.share - 5) < 1.5
    # Fault injected: the file is edited after relman wrote it (weights swapped, metadata kept).
    doc = json.loads(path.read_text())
    doc["flags"]["greeter"]["targeting"]["if"][2]["fractional"] = [["new", 9500], ["previous", 500]]
    path.write_text(json.dumps(doc))
    bad = read_back(path, f, 2000, timeout=5)
    assert bad.problem is not None and "expected 5%" in bad.problem and not bad.stale
    # Fault injected: the file now carries another stage; the read-back waits, then gives up.
    write(path, flag(25.0, "quarter"))
    started = time.monotonic()
    stale = read_back(path, f, 200, timeout=0.5)
    assert stale.stale and "serves another write" in (stale.problem or "")
    assert 0.5 <= time.monotonic() - started < 3


def test_read_back_refuses_a_provider_that_answers_something_else() -> None:
    f = flag(1.0, "one", ALLOW)
    meta = dict(f.metadata)
    # Fault injected: a provider that sends everyone, allow-listed or not, to `previous`.
    always_previous = readback_problem(
        f, lambda k: Evaluation("previous", "1.2.0", metadata=meta), sample_keys(500)
    )
    assert always_previous.problem == "allow-listed key 'alice' got 'previous', not 'new'"
    # ... one whose `new` serves the wrong version.
    wrong_value = readback_problem(f, lambda k: Evaluation("new", "9.9.9", metadata=meta), sample_keys(500))
    assert "got variant 'new' = '9.9.9'" in (wrong_value.problem or "")
    # ... one that errors (a missing flag): stale, worth waiting for.
    missing = readback_problem(
        f, lambda k: Evaluation(None, "", error="FLAG_NOT_FOUND: gone"), sample_keys(10)
    )
    assert missing.stale and "FLAG_NOT_FOUND" in (missing.problem or "")
    # ... one that serves every key `new` at 1%.
    everyone = readback_problem(f, lambda k: Evaluation("new", "1.3.0", metadata=meta), sample_keys(2000))
    assert "100.00% of 2000 sample keys" in (everyone.problem or "")
