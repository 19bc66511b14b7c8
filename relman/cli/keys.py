"""`relman keys`: make and show the Ed25519 keys people (and the worker) sign with.

A key is `<keys_dir>/<name>.key` (PKCS#8 PEM, mode 0600, optionally passphrase-protected)
beside `<name>.pub`, the line the catalog declares for that person. Other commands sign
`--as NAME` with `load_signer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relman.config import Settings, load_settings
from relman.errors import RelmanError
from relman.identity.keys import (
    WORKER,
    KeyError_,
    Signer,
    key_id,
    key_path,
    read_private,
    read_public_file,
    write_private,
)

keys_app = typer.Typer(
    help="Signing keys: make yours, show it (votes and operator actions are signed).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

AsOpt = Annotated[str | None, typer.Option("--as", help="Whose key (login).", show_default=False)]
WorkerOpt = Annotated[
    bool, typer.Option("--worker", help="The worker's evidence key (RELMAN_EVIDENCE_KEY) instead.")
]


def load_signer(settings: Settings, name: str) -> Signer:
    """The key `--as NAME` signs with: `<keys_dir>/NAME.key`, unlocked by RELMAN_KEY_PASSPHRASE."""
    return _read(settings, name, _path(settings, name))


def load_evidence_signer(settings: Settings) -> Signer:
    """The worker's evidence key (RELMAN_EVIDENCE_KEY), which signs the release evidence."""
    if not settings.evidence_key.exists():
        raise RelmanError(
            f"no evidence key at {settings.evidence_key}; create it with `relman keys init --worker`"
        )
    return _read(settings, WORKER, settings.evidence_key)


def _path(settings: Settings, name: str) -> Path:
    try:
        return key_path(settings.keys_dir, name)
    except KeyError_ as exc:
        raise RelmanError(str(exc)) from None


def _read(settings: Settings, name: str, path: Path) -> Signer:
    try:
        return read_private(path, name, settings.passphrase)
    except KeyError_ as exc:
        raise RelmanError(str(exc)) from None


def _target(settings: Settings, name: str | None, worker: bool) -> tuple[str, Path]:
    """(who, private key path) for `--as NAME` or `--worker`."""
    if worker == (name is not None):
        raise RelmanError("give either --as NAME or --worker")
    if name is None:
        return WORKER, settings.evidence_key
    return name, _path(settings, name)


@keys_app.command()
def init(
    name: AsOpt = None,
    worker: WorkerOpt = False,
    passphrase: Annotated[
        bool,
        typer.Option(
            "--passphrase", help="Protect the key with a passphrase, asked twice (or RELMAN_KEY_PASSPHRASE)."
        ),
    ] = False,
) -> None:
    """Make a signing key (NAME.key, mode 0600, and NAME.pub) and print the line for the catalog."""
    settings = load_settings()
    who, path = _target(settings, name, worker)
    exists = RelmanError(f"{path} already exists: a key is never replaced (move it away to make a new one)")
    if path.exists():
        raise exists
    secret = settings.passphrase
    if passphrase:
        typed = typer.prompt(f"Passphrase for {who}'s key", hide_input=True, confirmation_prompt=True)
        secret = typed.encode() if typed else None
    signer = Signer.generate(who)
    try:
        write_private(path, signer, secret)
    except FileExistsError:
        raise exists from None
    except OSError as exc:
        raise RelmanError(f"cannot write {path}: {exc.strerror}") from None
    protected = "passphrase-protected" if secret else "no passphrase"
    typer.echo(f"wrote {path} (private, {protected}: keep it to yourself) and {path.with_suffix('.pub')}")
    typer.echo(f"key id: {signer.key_id}")
    typer.echo("declare it in the catalog:")
    if worker:
        typer.echo(f'evidence:\n  keys: ["{signer.public}"]')
    else:
        typer.echo(f'people:\n  {who}: {{keys: ["{signer.public}"]}}')


@keys_app.command()
def show(name: AsOpt = None, worker: WorkerOpt = False) -> None:
    """Print a key's name, key id and public key (from NAME.pub, else from the private key)."""
    settings = load_settings()
    who, path = _target(settings, name, worker)
    pub = path.with_suffix(".pub")
    if pub.exists():
        try:
            public = read_public_file(pub)
        except KeyError_ as exc:
            raise RelmanError(str(exc)) from None
    elif worker:
        public = load_evidence_signer(settings).public
    else:
        public = _read(settings, who, path).public
    typer.echo(f"name: {who}\nkey id: {key_id(public)}\npublic key: {public}\nprivate key: {path}")
