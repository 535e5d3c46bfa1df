"""``p2pshare``: start a tracker or a peer, and drive a running peer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from p2pshare.config import TrackerSettings, load_settings
from p2pshare.errors import P2PShareError

app = typer.Typer(
    name="p2pshare",
    help="Peer-to-peer file sharing: a tracker, peers that share folders, verified downloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or $P2PSHARE_CONFIG).")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    typer.echo(f"p2pshare: {message}", err=True)
    return typer.Exit(code)


@app.command()
def tracker(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (0: any free).")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file of the registry.")] = None,
) -> None:
    """Run the tracker (bootstrap server) in the foreground."""
    from p2pshare.tracker.server import run

    settings = load_settings(TrackerSettings, "tracker", config, host=host, port=port, db=db)
    run(settings)


def main() -> None:
    try:
        app()
    except P2PShareError as exc:
        typer.echo(f"p2pshare: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
