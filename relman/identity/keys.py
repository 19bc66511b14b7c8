"""Ed25519 keys: create, store (mode 0600, optional passphrase), load, name by key id."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import TypeAdapter, ValidationError

from relman.contracts import UserName

PREFIX = "ed25519:"
WORKER = "relman-worker"
"""The name the worker signs release evidence as (`<keys_dir>/relman-worker.key` by default)."""

_USER_NAME: TypeAdapter[str] = TypeAdapter(UserName)


class KeyError_(ValueError):
    """A key file or key text that cannot be used; the message names it."""


def public_text(key: Ed25519PublicKey) -> str:
    """`ed25519:<base64 raw>`: the line a catalog holds for a person."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def parse_public(text: str) -> Ed25519PublicKey:
    if not text.startswith(PREFIX):
        raise KeyError_(f"public key {text[:20]!r}… must start with {PREFIX}")
    try:
        raw = base64.b64decode(text.removeprefix(PREFIX), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyError_(f"public key {text[:20]!r}… is not a valid Ed25519 key ({exc})") from None


def key_id(text: str) -> str:
    """First 16 hex digits of the sha256 of the raw public key: short, stable, in every proof."""
    raw = base64.b64decode(text.removeprefix(PREFIX))
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(public: str, signature_b64: str, message: bytes) -> bool:
    try:
        parse_public(public).verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, KeyError_, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Signer:
    """A private key and the name it signs as; `provider` when it vouches for others."""

    name: str
    private: Ed25519PrivateKey
    provider: str | None = None

    @classmethod
    def generate(cls, name: str, provider: str | None = None) -> Signer:
        return cls(name, Ed25519PrivateKey.generate(), provider)

    @property
    def public(self) -> str:
        return public_text(self.private.public_key())

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    def as_provider(self, provider: str) -> Signer:
        return Signer(self.name, self.private, provider)


def write_private(path: Path, signer: Signer, passphrase: bytes | None = None) -> None:
    """PKCS#8 PEM, encrypted when a passphrase is given; created 0600 and never overwritten."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = signer.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: an existing key (someone's identity) is never replaced by accident.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    path.with_suffix(".pub").write_text(signer.public + "\n")


def read_private(path: Path, name: str, passphrase: bytes | None = None) -> Signer:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyError_(
            f"no key for {name} at {path}; create one with `relman keys init --as {name}`"
        ) from None
    except OSError as exc:
        raise KeyError_(f"key {path} cannot be read: {exc.strerror}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise KeyError_(f"key {path} is readable by others; `chmod 600 {path}`")
    try:
        private = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyError_(f"key {path} is protected by a passphrase; set RELMAN_KEY_PASSPHRASE") from None
        # A passphrase set for other keys must not make an unprotected key unreadable.
        return read_private(path, name)
    except ValueError:
        raise KeyError_(f"key {path} cannot be loaded (wrong passphrase, or not a PEM private key)") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyError_(f"key {path} is not an Ed25519 key")
    return Signer(name, private)


def key_path(keys_dir: Path, name: str) -> Path:
    """`<keys_dir>/<name>.key`; the name must be a login, so it can never leave `keys_dir`."""
    try:
        _USER_NAME.validate_python(name)
    except ValidationError as exc:
        why = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise KeyError_(f"{name!r} cannot name a key: {why}") from None
    return keys_dir / f"{name}.key"


def read_public_file(path: Path) -> str:
    """The one `ed25519:...` line of a `.pub` file, normalised; `KeyError_` naming the file."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise KeyError_(f"public key file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyError_(f"public key file {path} is not text") from None
    if len(lines) != 1:
        raise KeyError_(f"public key file {path} must hold one ed25519:... line (found {len(lines)} lines)")
    try:
        return public_text(parse_public(lines[0]))
    except KeyError_ as exc:
        raise KeyError_(f"public key file {path}: {exc}") from None


def ensure_keys(keys_dir: Path, names: Iterable[str]) -> dict[str, Signer]:
    """The signer of each name, its key created (no passphrase) unless `keys_dir` has it.

    For the demo and tests: their people need real keys before a catalog naming their
    `.pub` files loads. A missing `.pub` beside an existing key is written again.
    """
    signers = {}
    for name in names:
        path = key_path(keys_dir, name)
        if path.exists():
            signer = read_private(path, name)
            pub = path.with_suffix(".pub")
            if not pub.exists():
                pub.write_text(signer.public + "\n")
        else:
            signer = Signer.generate(name)
            write_private(path, signer)
        signers[name] = signer
    return signers
