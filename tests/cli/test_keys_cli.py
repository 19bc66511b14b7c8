"""`relman keys init/show` through the real entry point, and `load_signer` for the other commands."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relman.cli import app
from relman.cli.keys import load_evidence_signer, load_signer
from relman.config import load_settings
from relman.errors import RelmanError
from relman.identity.keys import read_public_file, verify_signature


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a user whose data directory is `tmp_path/data`; no other RELMAN_*."""
    for key in list(os.environ):
        if key.startswith("RELMAN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RELMAN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


def relman(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The console entry point (it leaves with os._exit) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "relman.starter", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_init_writes_a_private_key_and_prints_the_catalog_line(env: dict[str, str], tmp_path: Path) -> None:
    keys = tmp_path / "data" / "keys"
    done = relman(env, "keys", "init", "--as", "alice")
    assert done.returncode == 0, done.stderr
    key, pub = keys / "alice.key", keys / "alice.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(keys.stat().st_mode) == 0o700
    public = read_public_file(pub)
    signer = load_signer(load_settings(), "alice")
    assert signer.public == public
    assert f"key id: {signer.key_id}" in done.stdout
    assert f'people:\n  alice: {{keys: ["{public}"]}}\n' in done.stdout

    shown = relman(env, "keys", "show", "--as", "alice")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[:3] == [
        "name: alice",
        f"key id: {signer.key_id}",
        f"public key: {public}",
    ]


def test_init_refuses_to_overwrite_a_key(env: dict[str, str], tmp_path: Path) -> None:
    assert relman(env, "keys", "init", "--as", "bob").returncode == 0
    key = tmp_path / "data" / "keys" / "bob.key"
    before = key.read_bytes()
    again = relman(env, "keys", "init", "--as", "bob")
    assert again.returncode == 1
    assert (
        again.stderr
        == f"error: {key} already exists: a key is never replaced (move it away to make a new one)\n"
    )
    assert key.read_bytes() == before


def test_a_bad_name_is_one_line_naming_it(env: dict[str, str], tmp_path: Path) -> None:
    done = relman(env, "keys", "init", "--as", "../Robert")
    assert done.returncode == 1
    assert done.stderr == (
        "error: '../Robert' cannot name a key: must be lower-case letters, digits, '.', '_' or '-', "
        "2-64 characters\n"
    )
    assert not (tmp_path / "data").exists()
    assert relman(env, "keys", "show").stderr == "error: give either --as NAME or --worker\n"


def test_show_derives_the_public_key_when_the_pub_file_is_gone(env: dict[str, str], tmp_path: Path) -> None:
    passphrase_env = {**env, "RELMAN_KEY_PASSPHRASE": "correct horse"}
    assert relman(passphrase_env, "keys", "init", "--as", "carol").returncode == 0
    pub = tmp_path / "data" / "keys" / "carol.pub"
    public = read_public_file(pub)
    pub.unlink()
    shown = relman(passphrase_env, "keys", "show", "--as", "carol")
    assert shown.returncode == 0 and f"public key: {public}" in shown.stdout
    locked = relman(env, "keys", "show", "--as", "carol")
    assert locked.returncode == 1
    assert locked.stderr.strip().endswith("is protected by a passphrase; set RELMAN_KEY_PASSPHRASE")
    wrong = relman({**env, "RELMAN_KEY_PASSPHRASE": "battery staple"}, "keys", "show", "--as", "carol")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    missing = relman(env, "keys", "show", "--as", "dave")
    assert missing.returncode == 1
    assert missing.stderr.endswith("create one with `relman keys init --as dave`\n")


def test_the_worker_evidence_key(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evidence = tmp_path / "secrets" / "evidence.key"
    worker_env = {**env, "RELMAN_EVIDENCE_KEY": str(evidence)}
    done = relman(worker_env, "keys", "init", "--worker")
    assert done.returncode == 0, done.stderr
    public = read_public_file(evidence.with_suffix(".pub"))
    assert f'evidence:\n  keys: ["{public}"]\n' in done.stdout
    assert f"public key: {public}" in relman(worker_env, "keys", "show", "--worker").stdout
    monkeypatch.setenv("RELMAN_EVIDENCE_KEY", str(evidence))
    signer = load_evidence_signer(load_settings())
    assert signer.name == "relman-worker" and signer.public == public
    assert relman(env, "keys", "show", "--worker").stderr == (
        f"error: no evidence key at {tmp_path / 'data' / 'keys' / 'relman-worker.key'}; "
        "create it with `relman keys init --worker`\n"
    )


def test_passphrase_is_asked_twice_and_protects_the_key(env: dict[str, str], tmp_path: Path) -> None:
    typed = "s3cret words\ntypo\ns3cret words\ns3cret words\n"
    result = CliRunner().invoke(app, ["keys", "init", "--as", "erin", "--passphrase"], input=typed)
    assert result.exit_code == 0, result.output
    asked = "Passphrase for erin's key: \nRepeat for confirmation: \n"
    assert result.output.startswith(f"{asked}Error: The two entered values do not match.\n{asked}wrote ")
    assert "s3cret" not in result.output
    key = tmp_path / "data" / "keys" / "erin.key"
    assert b"ENCRYPTED" in key.read_bytes()
    with pytest.raises(RelmanError, match="protected by a passphrase"):
        load_signer(load_settings(), "erin")
    signer = load_signer(load_settings(key_passphrase="s3cret words"), "erin")
    assert verify_signature(read_public_file(key.with_suffix(".pub")), signer.sign(b"x"), b"x")


def test_load_signer_errors_are_one_line(env: dict[str, str]) -> None:
    settings = load_settings()
    with pytest.raises(RelmanError, match=r"^'Alice' cannot name a key"):
        load_signer(settings, "Alice")
    with pytest.raises(RelmanError, match=r"^no key for frank at "):
        load_signer(settings, "frank")


def test_key_settings_follow_the_data_dir_and_hide_the_passphrase(
    env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings()
    assert settings.keys_dir == tmp_path / "data" / "keys"
    assert settings.evidence_key == tmp_path / "data" / "keys" / "relman-worker.key"
    assert settings.key_passphrase is None
    moved = load_settings(keys_dir="~/elsewhere", key_passphrase="hunter22")
    assert moved.keys_dir == Path.home() / "elsewhere"
    assert moved.evidence_key == Path.home() / "elsewhere" / "relman-worker.key"
    assert "hunter22" not in repr(moved) and "hunter22" not in str(moved.model_dump())
