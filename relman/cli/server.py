"""Process commands of the relman CLI: `relman worker`, `relman dev` (a local Temporal dev
server) and `relman demo`. Each imports what it runs when it runs: the CLI never imports the
workflows or the activities."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from relman.cli.common import fail, run
from relman.errors import RelmanError

app = typer.Typer()
"""The process commands; `relman.cli` adds them to `relman` at the top level."""


@app.command()
def worker() -> None:
    """Run a worker (workflows + activities) against the configured Temporal; Ctrl-C stops it."""
    from relman.config import load_settings
    from relman.observability import configure_logging
    from relman.worker import run_worker

    try:
        settings = load_settings()
    except RelmanError as exc:
        raise fail(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    run(lambda: run_worker(settings))


@app.command()
def dev(
    port: Annotated[int, typer.Option(min=1, max=65535, help="gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Web UI port.")] = 8233,
    db_file: Annotated[
        Path | None, typer.Option(help="SQLite file (default: <data dir>/temporal.db).")
    ] = None,
) -> None:
    """A local Temporal dev server (SQLite-persisted) with relman's search attributes; Ctrl-C stops it."""
    from relman.config import load_settings
    from relman.devserver import DevServer

    async def go() -> None:
        db = db_file or load_settings().data_dir / "temporal.db"
        server = DevServer(port, ui_port, db)
        try:
            await server.start()
            typer.echo(f"Temporal dev server on {server.address} (state in {db})")
            typer.echo(f"Temporal UI: {server.ui_url}")
            typer.echo("Ctrl-C to stop")
            await _wait_forever()
        finally:
            server.stop()

    try:
        run(go)
    except KeyboardInterrupt:
        typer.echo("stopped")


async def _wait_forever() -> None:
    """Until Ctrl-C / SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def demo(
    exit_when_done: Annotated[
        bool, typer.Option("--exit", help="End when the releases are done (for scripts and CI).")
    ] = False,
    port: Annotated[int | None, typer.Option(help="gRPC port (default 7233 if free, else any).")] = None,
    ui_port: Annotated[int | None, typer.Option(help="UI port (default 8233 if free, else any).")] = None,
) -> None:
    """Dev server + worker + two example releases: one through every phase, one that rolls back."""
    from relman.demo import run_demo

    ok = run(lambda: run_demo(exit_when_done=exit_when_done, port=port, ui_port=ui_port, emit=typer.echo))
    if not ok:
        raise fail("the demo's releases did not end as expected")
