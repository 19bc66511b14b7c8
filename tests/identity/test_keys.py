"""Key files: created 0600 in a 0700 directory, never overwritten, passphrases, .pub files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from relman.identity.keys import (
    KeyError_,
    Signer,
    ensure_keys,
    key_path,
    read_private,
    read_public_file,
    verify_signature,
    write_private,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_private_and_its_public_half_is_the_catalog_line(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "alice.key"
    signer = Signer.generate("alice")
    write_private(path, signer)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert path.with_suffix(".pub").read_text() == signer.public + "\n"
    assert read_public_file(path.with_suffix(".pub")) == signer.public

    loaded = read_private(path, "alice")
    assert loaded.public == signer.public and loaded.key_id == signer.key_id
    assert verify_signature(signer.public, loaded.sign(b"vote"), b"vote")


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "alice.key"
    first = Signer.generate("alice")
    write_private(path, first)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private(path, Signer.generate("alice"))
    assert path.read_bytes() == before
    assert read_private(path, "alice").public == first.public


def test_passphrase_round_trip_and_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "bob.key"
    signer = Signer.generate("bob")
    write_private(path, signer, b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    assert read_private(path, "bob", b"correct horse").public == signer.public
    with pytest.raises(KeyError_, match=r"cannot be loaded \(wrong passphrase"):
        read_private(path, "bob", b"battery staple")
    with pytest.raises(KeyError_, match="protected by a passphrase; set RELMAN_KEY_PASSPHRASE"):
        read_private(path, "bob")


def test_a_passphrase_set_for_other_keys_still_reads_an_unprotected_key(tmp_path: Path) -> None:
    path = tmp_path / "carol.key"
    signer = Signer.generate("carol")
    write_private(path, signer)
    assert read_private(path, "carol", b"for other keys").public == signer.public


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dave.key"
    write_private(path, Signer.generate("dave"))
    path.chmod(0o644)
    with pytest.raises(KeyError_, match="readable by others; `chmod 600"):
        read_private(path, "dave")


def test_a_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(
        KeyError_, match=r"no key for erin at .*; create one with `relman keys init --as erin`"
    ):
        read_private(tmp_path / "erin.key", "erin")


@pytest.mark.parametrize("name", ["../etc/passwd", "Bob", "a", ".hidden", "x/y"])
def test_a_key_is_named_by_a_login_only(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyError_, match="cannot name a key: must be lower-case letters"):
        key_path(tmp_path, name)
    assert key_path(tmp_path, "relman-worker") == tmp_path / "relman-worker.key"


def test_ensure_keys_makes_missing_keys_and_keeps_existing_ones(tmp_path: Path) -> None:
    first = ensure_keys(tmp_path, ["alice", "bob"])
    (tmp_path / "bob.pub").unlink()
    again = ensure_keys(tmp_path, ["alice", "bob", "carol"])
    assert again["alice"].public == first["alice"].public
    assert again["bob"].public == first["bob"].public
    assert read_public_file(tmp_path / "bob.pub") == first["bob"].public
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{n}.{ext}" for n in ("alice", "bob", "carol") for ext in ("key", "pub")
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "must hold one ed25519:... line (found 0 lines)"),
        ("ed25519:a\ned25519:b\n", "found 2 lines"),
        ("ed25519:AAAA\n", "is not a valid Ed25519 key"),
        ("rsa:AAAA\n", "must start with ed25519:"),
    ],
)
def test_a_bad_public_key_file_is_named(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "x.pub"
    path.write_text(content)
    with pytest.raises(KeyError_) as exc:
        read_public_file(path)
    assert str(path) in str(exc.value) and reason in str(exc.value)
    with pytest.raises(KeyError_, match="cannot be read"):
        read_public_file(tmp_path / "absent.pub")
