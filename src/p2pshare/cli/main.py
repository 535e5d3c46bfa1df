"""``p2pshare``: start a tracker or a peer, and drive a running peer.

Exit codes: 0 done; 1 the command could not finish (e.g. a download failed);
2 bad input or configuration; 3 no peer answers at the control API; 130 interrupted.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from p2pshare import errors
from p2pshare.cli.control_client import ControlClient
from p2pshare.cli.shown import printable, shown

if TYPE_CHECKING:
    from rich.table import Table

# the config module (pydantic-settings) costs a tenth of a second to import:
# commands that talk to a running peer load it only when no --api is given
API_ENV = "P2PSHARE_API"

app = typer.Typer(
    name="p2pshare",
    help="Peer-to-peer file sharing: a tracker, peers that share folders, verified downloads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or $P2PSHARE_CONFIG).")
]
ApiOpt = Annotated[
    str | None,
    typer.Option("--api", help=f"Control API URL of the peer (default: ${API_ENV} or config)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
NetworkKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--network-key",
        help="Secret of a private network (or $P2PSHARE_NETWORK_KEY, or network_key in config).",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from p2pshare import __version__

        out.print(f"p2pshare {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Peer-to-peer file sharing: a tracker, peers that share folders, verified downloads."""


class Source(enum.StrEnum):
    tracker = "tracker"
    overlay = "overlay"
    both = "both"


def _table(*columns: str) -> Table:
    from rich.table import Table  # only for the commands that print one

    return Table(*columns, box=None)


def _api_url(api: str | None, config: Path | None) -> str:
    if api:
        return api
    if os.environ.get(API_ENV):
        return os.environ[API_ENV]
    from p2pshare.config import PeerSettings, load_settings

    return load_settings(PeerSettings, "peer", config).api_url


def _api_token(config: Path | None) -> str | None:
    """The control API's token, for a peer that demands one: ``$P2PSHARE_API_TOKEN``,
    else ``api_token`` of the config, else the file the peer keeps in its data folder.
    Looked for only when the peer demands a token."""
    from p2pshare.config import API_TOKEN_ENV, API_TOKEN_FILE, PeerSettings, load_settings

    if os.environ.get(API_TOKEN_ENV):
        return os.environ[API_TOKEN_ENV]
    settings = load_settings(PeerSettings, "peer", config)
    if settings.api_token:
        return settings.api_token
    try:
        return (settings.data / API_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def _control(api: str | None, config: Path | None, *, timeout: float = 30.0) -> ControlClient:
    """A client of the control API of the peer that ``--api`` / the config name."""
    return ControlClient(_api_url(api, config), timeout=timeout, token=lambda: _api_token(config))


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# -- processes -------------------------------------------------------------------


@app.command()
def tracker(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (0: any free).")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file of the registry.")] = None,
    network_key: NetworkKeyOpt = None,
) -> None:
    """Run the tracker (bootstrap server) in the foreground."""
    from p2pshare.config import TrackerSettings, load_settings
    from p2pshare.tracker.server import run

    run(
        load_settings(
            TrackerSettings, "tracker", config, host=host, port=port, db=db, network_key=network_key
        )
    )


@app.command()
def peer(
    config: ConfigOpt = None,
    share: Annotated[Path | None, typer.Option(help="Folder to share.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder for state and partial downloads.")
    ] = None,
    tracker: Annotated[str | None, typer.Option(help="Tracker URL ('' for none).")] = None,
    host: Annotated[str | None, typer.Option(help="Address the gRPC server listens on.")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (0: any free).")] = None,
    api_port: Annotated[int | None, typer.Option(help="Control API port (0: any free).")] = None,
    advertise: Annotated[
        str | None, typer.Option(help="HOST:PORT other peers dial to reach this one.")
    ] = None,
    seed: Annotated[
        list[str] | None,
        typer.Option(help="HOST:PORT of a peer to join the overlay through (repeatable)."),
    ] = None,
    network_key: NetworkKeyOpt = None,
) -> None:
    """Run a peer in the foreground: share a folder, serve pieces, download on request."""
    from p2pshare.config import PeerSettings, load_settings
    from p2pshare.peer.run import run

    settings = load_settings(
        PeerSettings,
        "peer",
        config,
        share=share,
        data=data,
        tracker=tracker,
        host=host,
        port=port,
        api_port=api_port,
        advertise=advertise,
        seeds=seed or None,
        network_key=network_key,
    )
    run(settings)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config file.")] = Path(
        "p2pshare.toml"
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    new_network: Annotated[
        bool,
        typer.Option(
            "--new-network",
            help="Make a new private network: a fresh network_key goes in the file and is"
            " printed alone on the last line, to copy to every tracker and peer of the network.",
        ),
    ] = False,
) -> None:
    """Write a commented config file with every setting at its default."""
    from p2pshare.config import config_template, new_network_key

    if path.exists() and not force:
        raise errors.UsageError(f"{path} exists; use --force to overwrite it")
    key = new_network_key() if new_network else None
    path.write_text(config_template(network_key=key))
    if key is not None:
        path.chmod(0o600)  # the key is the network's only secret
        out.print(shown(f"wrote {path} with a new network key; give the key to every process:"))
        sys.stdout.write(key + "\n")
    else:
        out.print(shown(f"wrote {path}"))


@app.command("hash")
def hash_(
    file: Annotated[Path, typer.Argument(help="File to index.")],
    piece_size: Annotated[int, typer.Option(help="Piece size in bytes.")] = 1 << 20,
    as_json: JsonOpt = False,
) -> None:
    """Compute a file's content id (the id other peers download it by)."""
    from p2pshare.core.manifest import check_piece_size
    from p2pshare.peer.sharing.hashing import hash_file

    try:
        check_piece_size(piece_size)
    except ValueError as exc:
        raise errors.UsageError(f"--piece-size: {exc}") from exc
    if not file.is_file():
        raise errors.UsageError(f"{file} is not a file")
    start = time.perf_counter()
    manifest = hash_file(file, name=file.name, piece_size=piece_size)
    seconds = time.perf_counter() - start
    doc = {
        "content_id": manifest.content_id,
        "name": manifest.name,
        "size": manifest.size,
        "piece_size": manifest.piece_size,
        "seconds": seconds,
    }
    if as_json:
        _print_json(doc)
    else:
        out.print(shown(f"{manifest.content_id}  {manifest.name}  ({_size(manifest.size)})"))


# -- driving a peer ------------------------------------------------------------


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Words (each a prefix of a name word) or a glob.")],
    limit: Annotated[int, typer.Option(help="At most this many hits.")] = 100,
    source: Annotated[
        Source, typer.Option(help="Ask the tracker, the overlay of peers, or both.")
    ] = Source.both,
    ttl: Annotated[int, typer.Option(min=1, max=8, help="Overlay hops a query travels.")] = 4,
    walkers: Annotated[
        int, typer.Option(min=0, max=64, help="0: flood the overlay; N: N random walks.")
    ] = 0,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=30, help="Seconds to wait for overlay hits.")
    ] = 3.0,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find files by name on the network: the tracker's index and the overlay, merged."""
    with _control(api, config, timeout=timeout + 30) as client:
        result = client.get(
            "/v1/search",
            q=query,
            limit=limit,
            source=source.value,
            ttl=ttl,
            walkers=walkers,
            timeout=timeout,
        )
    hits = result["hits"]
    failed = {s: state for s, state in result["sources"].items() if state != "ok"}
    remote = [s for s in result["sources"] if s != "local"]
    if not hits and remote and all(s in failed for s in remote):
        # the network was not asked at all: not the same answer as "no file matches"
        why = "; ".join(f"{s}: {state}" for s, state in failed.items())
        raise errors.Unreachable(f"search failed: {why}")
    if as_json:
        _print_json(hits)
        return
    for source, state in failed.items():
        err.print(shown(f"{source}: {state}", "yellow"))
    if not hits:
        out.print(shown(f"no file matches {query!r}"))
        return
    table = _table("content id", "name", "size", "providers")
    for hit in hits:
        table.add_row(
            shown(hit["content_id"][:16]),
            shown(hit["name"]),
            _size(hit["size"]),
            str(len(hit["providers"])),
        )
    out.print(table)


@app.command()
def get(
    content_id: Annotated[str, typer.Argument(help="Content id, or a unique prefix from search.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Folder to save into (default: share).")
    ] = None,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a file and wait until it is verified and in place."""
    body: dict[str, Any] = {"content_id": content_id}
    if output is not None:
        body["out_dir"] = str(output.expanduser().resolve())
    with _control(api, config, timeout=60) as client:
        view = client.post("/v1/downloads", body)
        path = f"/v1/downloads/{view['content_id']}"
        show = not as_json and err.is_terminal
        from rich.progress import (  # only here: each command is a process of its own
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not show,
            transient=True,
        ) as bar:
            task = bar.add_task(_label(view), total=view["size"] or None)
            while view["state"] not in ("complete", "failed", "cancelled"):
                view = client.get(path, after=view["version"], wait=5)
                bar.update(
                    task,
                    description=_label(view),
                    total=view["size"] or None,
                    completed=view["bytes_done"],
                )
    if as_json:
        _print_json(view)
    if view["state"] == "failed":
        raise errors.DownloadFailed(view["error"] or "the download failed")
    if view["state"] == "cancelled":
        raise errors.DownloadFailed("the download was cancelled")
    if not as_json:
        rate = view["size"] / view["seconds"] if view["seconds"] > 0 else 0
        # one line, never wrapped, whatever the width: path=$(p2pshare get ...) reads it
        sys.stdout.write(f"{printable(view['path'])}  ({_size(view['size'])}, {_size(rate)}/s)\n")


def _label(view: dict[str, Any]) -> str:
    return printable(view["name"] or view["content_id"][:16])


@app.command("ls")
def ls(api: ApiOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the files this peer shares."""
    with _control(api, config) as client:
        files = client.get("/v1/files")["files"]
    if as_json:
        _print_json(files)
        return
    table = _table("content id", "name", "size")
    for f in files:
        table.add_row(shown(f["content_id"][:16]), shown(f["name"]), _size(f["size"]))
    out.print(table if files else "no shared files")


@app.command()
def status(api: ApiOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show this peer: its address, tracker, shared files and transfers."""
    with _control(api, config) as client:
        doc = client.get("/v1/status")
    if as_json:
        _print_json(doc)
        return
    t = doc["tracker"]
    reachable = f"reachable from the tracker: {t['reachable']}" if t.get("reachable") else None
    for line in (
        f"peer {doc['peer_id'] or '(unregistered)'} at {doc['address']}",
        f"share {doc['share']}: {doc['files']} files, {_size(doc['shared_bytes'])}",
        f"tracker {t['url'] or '-'}: {t['state']}",
        reachable,
        f"neighbours {len(doc['neighbours'])}: {' '.join(doc['neighbours']) or '-'}",
        f"served {_size(doc['bytes_served'])} in {doc['pieces_served']} pieces",
        _sync_line("syncing", doc.get("pubsub", {}).get("syncing", [])),
        _sync_line("conflict copies kept", doc.get("pubsub", {}).get("conflicts", [])),
    ):
        if line is not None:
            out.print(shown(line))
    if doc["downloads"]:
        table = _table("download", "state", "progress", "rate", "providers", "note")
        for d in doc["downloads"]:
            pct = 100 * d["bytes_done"] / d["size"] if d["size"] else 0
            table.add_row(
                shown(_label(d)),
                shown(d["state"]),
                f"{pct:.0f}%",
                f"{_size(d['rate'])}/s",
                str(len(d["providers"])),
                shown(_note(d)),
            )
        out.print(table)


def _sync_line(what: str, paths: list[str]) -> str | None:
    """A status line of the folder syncs (none when there is nothing to say)."""
    if not paths:
        return None
    more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
    return f"{what}: {', '.join(paths[:5])}{more}"


def _note(d: dict[str, Any]) -> str:
    """What a download's status line says besides numbers: its error or why it waits,
    and every provider banned from it with the reason (unless the error says so)."""
    note = d["error"] or d["why_stalled"] or ""
    parts = [note] if note else []
    for ban in d.get("banned", []):
        if ban["address"] not in note:
            parts.append(f"banned {ban['address']}: {ban['reason']}")
    return "; ".join(parts)


@app.command()
def watch(
    query: Annotated[
        str, typer.Argument(help="Words or a glob; '' for every change.", show_default=False)
    ],
    api: ApiOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per line per change.")
    ] = False,
) -> None:
    """Print each new or removed match on the network as it happens (until Ctrl-C)."""
    with _control(api, config) as client:
        for change in client.events("/v1/events", q=query):
            if as_json:
                sys.stdout.write(json.dumps(change, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                continue
            if change.get("event") == "sync":
                out.print(
                    shown(
                        f"sync {change.get('action')}: {change.get('name')}"
                        f"  {change.get('detail') or ''}"
                    ),
                    highlight=False,
                )
                continue
            sign = "+" if change.get("event") == "added" else "-"
            out.print(
                shown(
                    f"{sign} {change.get('name')}  ({_size(int(change.get('size') or 0))})"
                    f"  {str(change.get('content_id'))[:16]}  at {change.get('provider')}"
                ),
                highlight=False,
            )


@app.command()
def subscribe(
    query: Annotated[str, typer.Argument(help="Words or a glob.")],
    into: Annotated[Path, typer.Option("--into", help="Folder to download every match into.")],
    mirror: Annotated[
        bool,
        typer.Option(
            "--mirror", help="Follow removals too (the file is moved to the kept versions)."
        ),
    ] = False,
    versions: Annotated[
        int,
        typer.Option(
            "--versions",
            min=0,
            max=1000,
            help="Replaced or removed files kept per name in FOLDER/.p2pshare/versions (0: none).",
        ),
    ] = 5,
    api: ApiOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Keep a folder in sync with every current and future match: new versions replace
    the old ones (kept in FOLDER/.p2pshare/versions), local changes that conflict are
    kept as NAME.sync-conflict-YYYYMMDD-HHMMSS.EXT (kept across restarts of the peer)."""
    folder = str(into.expanduser().absolute())
    with _control(api, config) as client:
        sub = client.post(
            "/v1/subscriptions",
            {"query": query, "into": folder, "mirror": mirror, "versions": versions},
        )
    if as_json:
        _print_json(sub)
    else:
        how = ", mirrored" if sub.get("mirror") else ""
        out.print(shown(f"subscription {sub['id']}: {sub['query']!r} into {sub['into']}{how}"))


@app.command()
def subscriptions(api: ApiOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the peer's subscriptions."""
    with _control(api, config) as client:
        subs = client.get("/v1/subscriptions")["subscriptions"]
    if as_json:
        _print_json(subs)
        return
    table = _table("id", "query", "into", "mirror", "versions kept", "conflicts", "syncing")
    for sub in subs:
        kind = "two-way" if sub.get("two_way") else "one-way"
        table.add_row(
            shown(sub["id"]),
            shown(sub["query"]),
            shown(f"{sub['into']} ({kind})"),
            "yes" if sub.get("mirror") else "no",
            f"{len(sub.get('kept', []))} (max {sub.get('versions', 5)}/name)",
            shown(", ".join(sub.get("conflicts", []))) or "-",
            shown(", ".join(sub.get("syncing", []))) or "-",
        )
    out.print(table if subs else "no subscriptions")
    for sub in subs:
        for event in sub.get("events", [])[-5:]:
            out.print(
                shown(f"{sub['id']}: {event['action']} {event['name']}  {event['detail']}"),
                highlight=False,
            )


@app.command()
def unsubscribe(
    sub_id: Annotated[str, typer.Argument(metavar="ID", help="From 'p2pshare subscriptions'.")],
    api: ApiOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a subscription (files already downloaded stay)."""
    with _control(api, config) as client:
        sub = client.request("DELETE", f"/v1/subscriptions/{sub_id}")
    out.print(shown(f"removed subscription {sub['id']} ({sub['query']!r})"))


def _act_on_download(action: str, content_id: str, api: str | None, config: Path | None) -> None:
    with _control(api, config) as client:
        view = client.post(f"/v1/downloads/{content_id}/{action}", {})
    out.print(shown(f"{view['state']}: {_label(view)}"), highlight=False)


DownloadIdArg = Annotated[
    str, typer.Argument(metavar="ID", help="Content id (or a unique prefix) of the download.")
]


@app.command()
def pause(content_id: DownloadIdArg, api: ApiOpt = None, config: ConfigOpt = None) -> None:
    """Pause a download: the partial file and its record stay for 'resume'."""
    _act_on_download("pause", content_id, api, config)


@app.command()
def resume(content_id: DownloadIdArg, api: ApiOpt = None, config: ConfigOpt = None) -> None:
    """Resume a paused download from the pieces it already holds."""
    _act_on_download("resume", content_id, api, config)


@app.command()
def cancel(content_id: DownloadIdArg, api: ApiOpt = None, config: ConfigOpt = None) -> None:
    """Cancel a download and delete its partial file."""
    _act_on_download("cancel", content_id, api, config)


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Folder for the demo network (default: a temporary one).")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the network running (Ctrl-C stops it).")
    ] = False,
) -> None:
    """Start a local network (tracker + 3 peers), search, download, and summarize;
    prints each peer's web page."""
    from p2pshare.demo import run_demo

    run_demo(workdir, keep=keep)


def _exit_with(exc: errors.P2PShareError, code: int) -> None:
    # one unwrapped line, whatever the terminal width: scripts read it too
    message = printable(" ".join(str(exc).split()))
    sys.stderr.write(f"p2pshare: {message}\n")
    sys.exit(code)


def main() -> None:
    try:
        app()
    except errors.Unreachable as exc:
        _exit_with(exc, 3)
    except (errors.UsageError, errors.NotFound, errors.PermissionDenied) as exc:
        _exit_with(exc, 2)
    except errors.P2PShareError as exc:
        _exit_with(exc, 1)
    except KeyboardInterrupt:
        sys.exit(130)
