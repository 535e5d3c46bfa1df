"""Subscriptions: keep a local folder in sync with a query (``p2pshare subscribe``).

A subscription is a query and a folder. While the peer runs, every file matching the
query is followed by name (``p2pshare.peer.sync.engine.FolderSync``): a new version
of it published anywhere (a change from the tracker or the overlay, a publisher's
listing at start) replaces the local one by the rules of ``core.sync``; with
``mirror`` removals are followed too. The publishers heard of are remembered, so a
subscriber that was down asks each of them for its listing when it starts again.
Listings are taken once the change stream is open (and again each time it re-opens),
and a publisher first heard of on the stream is listed as well: a change made just
before a subscription starts is in a listing or on the stream, never in neither.
Subscriptions are saved in ``<data>/subscriptions.json`` and resumed when the peer
starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from p2pshare import errors
from p2pshare.core.names import parse_query
from p2pshare.core.pubsub import ShareChange
from p2pshare.core.sync import FileVersion
from p2pshare.peer.sharing.folders import check_out_folder
from p2pshare.peer.sync.engine import FolderSync
from p2pshare.tracker.models import SearchHit

__all__ = ["CATCH_UP_LIMIT", "SAVED_NAME", "Subscription", "Subscriptions"]

log = logging.getLogger(__name__)

SAVED_NAME = "subscriptions.json"
MAX_SUBSCRIPTIONS = 100
MAX_PUBLISHERS = 64  # remembered per subscription
CATCH_UP_LIMIT = 500  # current matches fetched when a subscription starts (the tracker's most)
DEFAULT_KEEP = 5  # versions kept per name (Syncthing's simple versioning)
MAX_KEEP = 1000
RETRY = 5.0
OPEN_WAIT = 5.0  # seconds the first catch-up waits for the change stream to open
MAX_LISTED = 1024  # publishers listed per opening of the stream

Search = Callable[[str], Awaitable[list[SearchHit]]]


class Changes(Protocol):
    """A change stream (``PeerNode.changes``): ``on_open`` once no change is missed."""

    def __call__(
        self, query: str, *, on_open: Callable[[], None]
    ) -> AsyncIterator[ShareChange]: ...


Listing = Callable[[str, str], Awaitable[list[tuple[str, FileVersion]]]]  # provider, query
MakeFolder = Callable[["Subscription"], FolderSync]


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    query: str
    into: str
    mirror: bool = False
    keep: int = DEFAULT_KEEP
    publishers: tuple[str, ...] = field(default=(), compare=False)


@dataclass
class _Run:
    """One run of a subscription: its stream's openings, the publishers listed since
    the last, the listings under way."""

    opened: asyncio.Event = field(default_factory=asyncio.Event)
    listed: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Subscriptions:
    """The subscriptions of one peer, saved in its data folder, each run as a task."""

    def __init__(
        self,
        *,
        data_dir: Path,
        search: Search,
        changes: Changes,
        listing: Listing,
        folder: MakeFolder,
        me: Callable[[], str],
    ) -> None:
        self._data = data_dir
        self._path = data_dir / SAVED_NAME
        self._search = search
        self._changes = changes
        self._listing = listing
        self._make_folder = folder
        self._me = me
        self._subs: dict[str, Subscription] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.folders: dict[str, FolderSync] = {}

    def start(self) -> None:
        for sub in self._load():
            self._subs[sub.id] = sub
            self._run(sub)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for folder in list(self.folders.values()):
            await folder.close()

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def add(
        self, query: str, into: str, *, mirror: bool = False, keep: int = DEFAULT_KEEP
    ) -> Subscription:
        parse_query(query)
        if not 0 <= keep <= MAX_KEEP:
            raise errors.UsageError(f"--versions: keep 0 to {MAX_KEEP} versions per file")
        folder = check_out_folder(into, data_dir=self._data, option="--into")
        for sub in self._subs.values():
            if sub.query == query and sub.into == str(folder):
                if (sub.mirror, sub.keep) != (mirror, keep):
                    raise errors.UsageError(
                        f"subscription {sub.id} has this query and folder already; remove it first"
                    )
                return sub
        self._check_apart(folder)
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise errors.UsageError(f"at most {MAX_SUBSCRIPTIONS} subscriptions; remove one")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.UsageError(f"--into: cannot create {folder}: {exc.strerror}") from exc
        sub = Subscription(
            id=secrets.token_hex(4), query=query, into=str(folder), mirror=mirror, keep=keep
        )
        self._subs[sub.id] = sub
        self._save()
        self._run(sub)
        return sub

    def _check_apart(self, folder: Path) -> None:
        """One folder, one subscription: two writing into the same files would race."""
        for sub in self._subs.values():
            other = Path(os.path.realpath(sub.into))
            if folder == other:
                how = "is the folder of"
            elif folder.is_relative_to(other):
                how = "is inside the folder of"
            elif other.is_relative_to(folder):
                how = "holds the folder of"
            else:
                continue
            raise errors.UsageError(
                f"--into: {folder} {how} subscription {sub.id} ({sub.query!r} into {sub.into});"
                " two subscriptions may not share files: pick another folder, or remove that"
                " subscription first"
            )

    def remove(self, sub_id: str) -> Subscription:
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            raise errors.NotFound(
                f"no subscription {sub_id!r}; 'p2pshare subscriptions' lists them"
            )
        self._save()
        task = self._tasks.pop(sub_id, None)
        if task is not None:
            task.cancel()
        folder = self.folders.pop(sub_id, None)
        if folder is not None:
            asyncio.create_task(folder.close())
        return sub

    def _run(self, sub: Subscription) -> None:
        self.folders[sub.id] = self._make_folder(sub)
        self._tasks[sub.id] = asyncio.create_task(self._follow(sub), name=f"subscription {sub.id}")

    async def _follow(self, sub: Subscription) -> None:
        """The change stream, and each publisher's listing taken once the stream is
        open (again at each re-opening): a change made just before the subscription
        started is in the one or the other. A publisher first heard of on the stream
        is listed too (what it changed before the stream opened)."""
        folder = self.folders[sub.id]
        run = _Run()
        catch_up = asyncio.create_task(self._catch_ups(sub, folder, run))
        try:
            while True:
                try:
                    async for change in self._changes(sub.query, on_open=run.opened.set):
                        if change.provider == self._me():
                            continue
                        self._publisher_seen(sub.id, change.provider)
                        folder.offer(change.name, change.provider, change.version)
                        self._list_once(sub, change.provider, folder, run)
                except errors.P2PShareError as exc:
                    log.info("subscription %s: changes failed: %s", sub.id, exc)
                await asyncio.sleep(RETRY)
        finally:
            catch_up.cancel()
            for task in list(run.tasks):
                task.cancel()

    async def _catch_ups(self, sub: Subscription, folder: FolderSync, run: _Run) -> None:
        """A catch-up each time the change stream (re)opens; the first one after
        ``OPEN_WAIT`` seconds at most (the tracker may be down: the overlay is not)."""
        wait: float | None = OPEN_WAIT
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await run.opened.wait()
            wait = None
            run.opened.clear()
            run.listed.clear()
            await self._catch_up(sub, folder, run)

    async def _catch_up(self, sub: Subscription, folder: FolderSync, run: _Run) -> None:
        """The current versions of every publisher remembered, and of those a search
        finds now: what changed while this peer was down, or before the stream opened."""
        for publisher in self._subs.get(sub.id, sub).publishers:
            self._list_once(sub, publisher, folder, run)
        try:
            hits = await self._search(sub.query)
        except errors.P2PShareError as exc:
            log.info("subscription %s: search failed: %s", sub.id, exc)
            return
        me = self._me()
        for hit in hits:
            for provider in (p.address for p in hit.providers if p.address != me):
                self._publisher_seen(sub.id, provider)
                self._list_once(sub, provider, folder, run)

    def _list_once(self, sub: Subscription, provider: str, folder: FolderSync, run: _Run) -> None:
        """List ``provider``'s versions, unless listed since the stream last opened."""
        if provider in run.listed or len(run.listed) >= MAX_LISTED:
            return
        run.listed.add(provider)
        task = asyncio.create_task(self._list(sub, provider, folder))
        run.tasks.add(task)
        task.add_done_callback(run.tasks.discard)

    async def _list(self, sub: Subscription, provider: str, folder: FolderSync) -> None:
        try:
            listing = await self._listing(provider, sub.query)
        except errors.P2PShareError as exc:
            log.info("subscription %s: cannot list %s: %s", sub.id, provider, exc)
            return
        for name, version in listing:
            folder.offer(name, provider, version)

    def _publisher_seen(self, sub_id: str, provider: str) -> bool:
        """Remember ``provider`` as a publisher of the subscription; True if new."""
        sub = self._subs.get(sub_id)
        if sub is None or provider in sub.publishers:
            return False
        publishers = (*sub.publishers, provider)[-MAX_PUBLISHERS:]
        self._subs[sub_id] = Subscription(
            sub.id, sub.query, sub.into, sub.mirror, sub.keep, publishers
        )
        try:
            self._save()
        except errors.P2PShareError as exc:
            log.warning("%s", exc)
        return True

    def _load(self) -> list[Subscription]:
        try:
            doc = json.loads(self._path.read_text())
            return [
                Subscription(
                    id=str(s["id"]),
                    query=str(s["query"]),
                    into=str(s["into"]),
                    mirror=bool(s.get("mirror", False)),
                    keep=min(max(int(s.get("keep", DEFAULT_KEEP)), 0), MAX_KEEP),
                    publishers=tuple(str(p) for p in s.get("publishers", []))[-MAX_PUBLISHERS:],
                )
                for s in doc["subscriptions"]
            ][:MAX_SUBSCRIPTIONS]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", self._path, exc)
            return []

    def _save(self) -> None:
        doc = {
            "subscriptions": [
                {**asdict(s), "publishers": list(s.publishers)} for s in self._subs.values()
            ]
        }
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            raise errors.P2PShareError(f"cannot save subscriptions to {self._path}: {exc}") from exc
