"""What the relman CLI's command groups share: output that is safe for a terminal, one-line
failures, running a coroutine or a client call, times, tables, and the common options."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from relman.client import ReleaseClient
from relman.errors import RelmanError, one_line

T = TypeVar("T")

# --- shared options ----------------------------------------------------------------------

ReleaseIdArg = Annotated[str, typer.Argument(help="Release id, e.g. release-checkout-2.4.1.")]
UserOpt = Annotated[str, typer.Option("--as", help="Who you are (login).", show_default=False)]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded in the release history.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

# --- text fit for a terminal -------------------------------------------------------------

# Unicode's controls (Cc), format characters (Cf: bidi overrides, zero-width), surrogates and
# line/paragraph separators: printed raw, they start lines, recolour or reorder a terminal.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def safe(text: object) -> str:
    """`text` fit for a terminal: those characters escaped as repr does (\\n, \\x1b, \\u202e).

    The contracts refuse them at input; this also covers older releases and other clients, so
    nothing from a release can forge a line or a colour in relman's output.
    """
    s = str(text)
    if s.isprintable():  # every character in _UNSAFE is non-printable: the common case is one test
        return s
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE else ch for ch in s)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def short(digest: str) -> str:
    """The first 16 hex digits of a hash: enough to compare by eye."""
    return f"{digest[:16]}…" if digest else "-"


def ts(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# --- failing, running, printing -----------------------------------------------------------


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line reason to stderr; returns the Exit to raise."""
    typer.echo(f"error: {safe(message)}", err=True)
    return typer.Exit(code)


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; user errors become a one-line message and exit code 1."""
    try:
        return asyncio.run(factory())
    except RelmanError as exc:
        raise fail(str(exc)) from None
    except ValidationError as exc:
        raise fail(one_line(exc)) from None


def with_client(fn: Callable[[ReleaseClient], Awaitable[T]]) -> T:
    async def go() -> T:
        return await fn(await ReleaseClient.connect())

    return run(go)


def echo_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
    else:
        typer.echo(json.dumps(_jsonable(value), indent=2, default=str))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def parse_time(value: str, name: str) -> datetime:
    """ISO date or datetime; naive values are UTC."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date/time (e.g. 2025-06-01T22:00)", param_hint=name
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
