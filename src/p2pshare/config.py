"""Settings of each process: file < ``P2PSHARE_...`` environment < command-line flags.

One TOML file holds a ``[tracker]`` and a ``[peer]`` table (``p2pshare init``
writes a commented one). Environment variables are ``P2PSHARE_TRACKER_<KEY>`` for
the tracker and ``P2PSHARE_PEER_<KEY>`` for a peer. A bad value stops the process
with a ``ConfigError`` that names the key.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from p2pshare.core.manifest import DEFAULT_PIECE_SIZE, check_piece_size
from p2pshare.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]
TlsMode = Literal["off", "auto", "files"]
SuperSeedMode = Literal["auto", "on", "off"]
DEFAULT_TRACKER_PORT = 8460
DEFAULT_PEER_PORT = 8461
DEFAULT_API_PORT = 8462
CONFIG_ENV = "P2PSHARE_CONFIG"
NETWORK_KEY_ENV = "P2PSHARE_NETWORK_KEY"
NETWORK_KEY_PREFIX = "p2pk-"
API_TOKEN_ENV = "P2PSHARE_API_TOKEN"
"""The control API's token, for the CLI (the peer reads ``api_token``)."""
API_TOKEN_FILE = "api-token"
"""In the data folder: the control API's token when ``api_token`` is unset."""
_MIN_KEY_CHARS = 32


def new_network_key() -> str:
    """A fresh random network key (256 bits), as ``p2pshare init --new-network`` prints it."""
    return NETWORK_KEY_PREFIX + secrets.token_urlsafe(32)


def _check_hostport(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, for example 203.0.113.7:8461")
    return value


class _NetworkSettings(BaseSettings):
    """What every process of one network shares: its key and how it encrypts."""

    network_key: str | None = Field(
        None,
        description="Secret of a private network (p2pshare init --new-network makes one);"
        " unset: an open network. Also top-level in the file, or $P2PSHARE_NETWORK_KEY.",
    )
    tls: TlsMode = Field(
        "off",
        description='"off"; "auto": a certificate made here and pinned through the network'
        ' key (needs network_key); "files": tls_cert and tls_key below.',
    )
    tls_cert: Path | None = Field(None, description='PEM certificate chain (tls = "files").')
    tls_key: Path | None = Field(None, description='PEM private key (tls = "files").')
    tls_ca: Path | None = Field(
        None,
        description='PEM roots the certificates of other processes must chain to (tls = "files";'
        " default: the system roots).",
    )

    @field_validator("network_key")
    @classmethod
    def _network_key(cls, v: str | None) -> str | None:
        if not v:
            return None
        v = v.strip()
        if len(v) < _MIN_KEY_CHARS or not v.isascii() or not v.isprintable() or " " in v:
            raise ValueError(
                f"must be at least {_MIN_KEY_CHARS} printable ASCII characters without spaces"
                " (p2pshare init --new-network makes one)"
            )
        return v

    @model_validator(mode="after")
    def _tls_needs(self) -> _NetworkSettings:
        if self.tls == "auto" and self.network_key is None:
            raise ValueError('tls = "auto" needs a network_key (p2pshare init --new-network)')
        if self.tls == "files" and (self.tls_cert is None or self.tls_key is None):
            raise ValueError('tls = "files" needs tls_cert and tls_key')
        return self


class TrackerSettings(_NetworkSettings):
    """The tracker (bootstrap server)."""

    model_config = SettingsConfigDict(env_prefix="P2PSHARE_TRACKER_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the REST API listens on.")
    port: int = Field(DEFAULT_TRACKER_PORT, ge=0, le=65535, description="REST API port.")
    db: Path = Field(Path("p2pshare-tracker.db"), description="SQLite file of the registry.")
    lease_seconds: int = Field(
        60, ge=5, le=86400, description="A peer not heard of for this long is dropped."
    )
    neighbour_sample: int = Field(
        8, ge=0, le=256, description="How many live peers a joining peer is given."
    )
    workers: int = Field(
        1,
        ge=0,
        le=256,
        description="Worker processes serving the port (0: one per CPU); each holds the index.",
    )
    rate_limit: float = Field(
        50,
        ge=0,
        description="Requests per second one client address may make on average (0: no"
        " limit); more get 429 with Retry-After. Per worker process.",
    )
    rate_burst: int = Field(
        200, ge=1, le=1_000_000, description="Requests one client address may make at once."
    )
    search_cache_mb: int = Field(
        24,
        ge=0,
        le=65_536,
        description="Memory (MiB) each worker process may keep search answers in until a"
        " change could alter them (0: none kept).",
    )
    verify_addresses: bool = Field(
        True,
        description="Dial each registered address back (gRPC Hello) and hand out only those"
        " that answer as the peer that registered them; a takeover of a live peer's address"
        " needs that answer or its token.",
    )
    max_peers_per_client: int = Field(
        64, ge=0, description="Live registrations one client address may hold (0: no limit)."
    )
    max_files_per_client: int = Field(
        250_000,
        ge=0,
        description="Files the registrations of one client address may index (0: no limit).",
    )
    max_files_per_peer: int = Field(
        100_000, ge=0, description="Files one registration, or one request, may list (0: no limit)."
    )
    files_per_second: float = Field(
        20_000,
        ge=0,
        description="Files one client address may add or remove per second, in bursts of"
        " max_files_per_peer (0: no limit); more get 429. Per worker process.",
    )
    log_level: LogLevel = Field("warning", description="debug, info, warning or error.")


class PeerSettings(_NetworkSettings):
    """A peer: its share folder, its gRPC server, its control API."""

    model_config = SettingsConfigDict(env_prefix="P2PSHARE_PEER_", extra="forbid")

    share: Path = Field(Path("share"), description="Folder whose files this peer shares.")
    data: Path = Field(
        Path("p2pshare-data"), description="Folder for the hash cache, partial downloads, state."
    )
    downloads: Path | None = Field(
        None, description="Where downloads go by default (default: the share folder)."
    )
    tracker: str | None = Field(
        f"http://127.0.0.1:{DEFAULT_TRACKER_PORT}",
        description="Tracker URL; empty for none. With tls on, http:// is taken as https://.",
    )
    host: str = Field("127.0.0.1", description="Address the gRPC server listens on.")
    port: int = Field(DEFAULT_PEER_PORT, ge=0, le=65535, description="gRPC port (0: any free).")
    advertise: str | None = Field(
        None, description="HOST:PORT other peers dial (default: host:port as bound)."
    )
    api_host: str = Field("127.0.0.1", description="Address of the local control API.")
    api_port: int = Field(DEFAULT_API_PORT, ge=0, le=65535, description="Control API port.")
    api_token: str | None = Field(
        None,
        description="Token the control API demands when api_host is not a loopback address"
        " (default: one made once and kept in <data>/api-token); $P2PSHARE_API_TOKEN for the CLI.",
    )
    api_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the control API on loopback answers besides localhost and"
        " loopback addresses (any other Host header is refused: DNS rebinding); a list,"
        " comma-separated in the environment.",
    )
    piece_size: int = Field(
        DEFAULT_PIECE_SIZE,
        description="Piece size for files this peer indexes (a file keeps the piece size,"
        " and so the content id, it was first indexed or downloaded with).",
    )
    hash_workers: int = Field(
        0, ge=0, le=64, description="Threads that hash pieces (0: one per core)."
    )
    whole_file_sha256: bool = Field(
        False, description="Also compute each shared file's SHA-256 (costs one more pass)."
    )
    heartbeat_seconds: float = Field(
        0, ge=0, description="Seconds between heartbeats (0: a third of the tracker's lease)."
    )
    streams_per_provider: int = Field(
        4, ge=1, le=32, description="Concurrent piece streams a download opens to each provider."
    )
    pieces_per_request: int = Field(
        8, ge=1, le=256, description="Pieces asked for in one GetPieces call."
    )
    max_download_rate: int = Field(
        0, ge=0, description="Download limit in bytes per second for all downloads (0: none)."
    )
    max_upload_rate: int = Field(
        0, ge=0, description="Upload limit in bytes per second for all uploads (0: none)."
    )
    super_seed: SuperSeedMode = Field(
        "auto",
        description="Offer downloaders of our own files distinct pieces a few at a time"
        " (BEP 16) so our upload carries each piece about once: auto (not to a downloader"
        " on this machine, where upload costs no bandwidth), on, off.",
    )
    swarm_blocks: SuperSeedMode = Field(
        "auto",
        description="Fetch 128 KiB blocks on each provider's exchange stream, served from"
        " its fair upload queue, instead of whole pieces by GetPieces calls: auto (unless"
        " every provider is on this machine, where the CPU binds and whole pieces are"
        " faster), on, off. A provider too old for blocks is left out while it is on.",
    )
    max_uploads: int = Field(
        64, ge=1, le=4096, description="Concurrent GetPieces streams this peer serves."
    )
    max_uploads_per_peer: int = Field(
        16,
        ge=1,
        le=4096,
        description="Of those, how many one remote peer (one IP address) may hold at once.",
    )
    max_subscribers: int = Field(
        256, ge=1, le=65536, description="Subscribe streams of other peers served at once."
    )
    max_subscribers_per_peer: int = Field(
        8, ge=1, le=65536, description="Of those, how many one remote peer may hold at once."
    )
    max_calls_per_peer: float = Field(
        100,
        ge=0,
        description="Hello, GetManifest, GetHave and Search calls one remote peer may make"
        " per second, bursts of twice that (0: no limit); piece and subscription streams"
        " are limited by the counts above instead.",
    )
    seeds: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="HOST:PORT of peers to join the overlay through (a list; comma-separated"
        " in the environment).",
    )
    neighbours: int = Field(8, ge=1, le=64, description="Most overlay neighbours kept.")
    learn_neighbours: bool = Field(
        True,
        description="Take the peers that neighbours list in Hello as candidate neighbours"
        " (false: only the tracker's sample, the saved list, seeds and peers that call).",
    )
    sync_tombstone_days: float = Field(
        30.0,
        gt=0,
        le=36500,
        description="Days a removed file's version is remembered (folder sync) before it"
        " expires from <data>/sync.db.",
    )
    log_level: LogLevel = Field("warning", description="debug, info, warning or error.")

    @field_validator("seeds", "api_allowed_hosts", mode="before")
    @classmethod
    def _seeds(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("seeds")
    @classmethod
    def _seed_addresses(cls, v: list[str]) -> list[str]:
        for seed in v:
            _check_hostport(seed)
        return v

    @field_validator("api_token")
    @classmethod
    def _api_token(cls, v: str | None) -> str | None:
        if not v:
            return None
        if len(v) < 16 or not v.isascii() or not v.isprintable() or " " in v:
            raise ValueError("must be at least 16 printable ASCII characters without spaces")
        return v

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, v: str | None) -> str | None:
        return _check_hostport(v)

    @field_validator("piece_size")
    @classmethod
    def _piece_size(cls, v: int) -> int:
        return check_piece_size(v)

    @field_validator("tracker")
    @classmethod
    def _tracker(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _tracker_over_tls(self) -> PeerSettings:
        # with tls on, this peer's index and token never go to the tracker in clear text
        if self.tls != "off" and self.tracker and self.tracker.startswith("http://"):
            self.tracker = "https://" + self.tracker.removeprefix("http://")
        return self

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


S = TypeVar("S", bound=BaseSettings)


def read_config_file(path: Path | None) -> dict[str, Any]:
    """The parsed TOML file at ``path`` (or ``$P2PSHARE_CONFIG``), ``{}`` if neither is set."""
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            return {}
        path = Path(env)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def load_settings(cls: type[S], section: str, path: Path | None = None, **flags: Any) -> S:
    """Settings of ``cls`` from the ``[section]`` of the file, the environment and ``flags``.

    Flags that are ``None`` were not given and do not override anything.
    """
    document = read_config_file(path)
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] in the config file must be a table")
    # the network key belongs to the whole network: top-level in the file, one
    # environment variable for every kind of process; a [section] value wins
    if "network_key" in document and "network_key" not in table:
        table = {**table, "network_key": document["network_key"]}
    given = {k: v for k, v in flags.items() if v is not None}
    if os.environ.get(NETWORK_KEY_ENV) and "network_key" not in given:
        given["network_key"] = os.environ[NETWORK_KEY_ENV]

    class _Layered(cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls_,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, table))

    try:
        layered = _Layered(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, section)) from exc
    return cls.model_construct(**layered.model_dump())


def _describe(exc: ValidationError, section: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "?"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{section}.{key}: {msg}" if err["loc"] else f"{section}: {msg}")
    return "bad configuration: " + "; ".join(problems)


def config_template(*, network_key: str | None = None) -> str:
    """A commented config file with every key at its default (and ``network_key``, if
    given, at the top, where it applies to every section)."""
    lines = [
        "# p2pshare configuration. Precedence: this file < P2PSHARE_... environment < flags.",
        "# Environment: P2PSHARE_TRACKER_<KEY> for [tracker], P2PSHARE_PEER_<KEY> for [peer].",
        "",
        "# Secret of a private network, for every section below ($P2PSHARE_NETWORK_KEY).",
        "# Processes without it can neither join nor read anything. Keep this file private.",
        f"network_key = {_toml_value(network_key)}" if network_key else "# network_key = ",
        "",
    ]
    for section, cls in (("tracker", TrackerSettings), ("peer", PeerSettings)):
        lines += [f"# {cls.__doc__}", f"[{section}]"]
        for name, field in cls.model_fields.items():
            if name == "network_key":
                continue
            lines.append(f"# {field.description}")
            default = field.get_default(call_default_factory=True)
            if default is None:
                lines.append(f"# {name} = ")
            else:
                lines.append(f"{name} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
