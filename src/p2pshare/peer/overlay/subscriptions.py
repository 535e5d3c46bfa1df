"""Subscriptions: keep a local folder in sync with a query (``p2pshare subscribe``).

A subscription is a query and a folder. While the peer runs, every file matching
the query that is on the network now (a search at start) or is published later (an
``added`` change, from the tracker or the overlay) is downloaded into the folder.
Removed files are kept. Subscriptions are saved in ``<data>/subscriptions.json``
and resumed when the peer starts again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from p2pshare import errors
from p2pshare.core.names import parse_query
from p2pshare.core.pubsub import ADDED, ShareChange
from p2pshare.peer.sharing.folders import check_out_folder
from p2pshare.tracker.models import SearchHit

__all__ = ["CATCH_UP_LIMIT", "SAVED_NAME", "Subscription", "Subscriptions"]

log = logging.getLogger(__name__)

SAVED_NAME = "subscriptions.json"
MAX_SUBSCRIPTIONS = 100
CATCH_UP_LIMIT = 500  # current matches fetched when a subscription starts (the tracker's most)

Search = Callable[[str], Awaitable[list[SearchHit]]]
Changes = Callable[[str], AsyncIterator[ShareChange]]
Fetch = Callable[[str, str, int, str, Path], None]  # content id, name, size, provider, into


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    query: str
    into: str


class Subscriptions:
    """The subscriptions of one peer, saved in its data folder, each run as a task."""

    def __init__(
        self,
        *,
        data_dir: Path,
        search: Search,
        changes: Changes,
        fetch: Fetch,
        me: Callable[[], str],
    ) -> None:
        self._data = data_dir
        self._path = data_dir / SAVED_NAME
        self._search = search
        self._changes = changes
        self._fetch = fetch
        self._me = me
        self._subs: dict[str, Subscription] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

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

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def add(self, query: str, into: str) -> Subscription:
        parse_query(query)
        folder = check_out_folder(into, data_dir=self._data, option="--into")
        for sub in self._subs.values():
            if sub.query == query and sub.into == str(folder):
                return sub
        if len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise errors.UsageError(f"at most {MAX_SUBSCRIPTIONS} subscriptions; remove one")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.UsageError(f"--into: cannot create {folder}: {exc.strerror}") from exc
        sub = Subscription(id=secrets.token_hex(4), query=query, into=str(folder))
        self._subs[sub.id] = sub
        self._save()
        self._run(sub)
        return sub

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
        return sub

    def _run(self, sub: Subscription) -> None:
        self._tasks[sub.id] = asyncio.create_task(self._follow(sub), name=f"subscription {sub.id}")

    async def _follow(self, sub: Subscription) -> None:
        into = Path(sub.into)
        changes = self._changes(sub.query)
        catch_up = asyncio.create_task(self._catch_up(sub, into))
        try:
            async for change in changes:
                if change.kind == ADDED and change.provider != self._me():
                    self._get(change.content_id, change.name, change.size, change.provider, into)
        finally:
            catch_up.cancel()

    async def _catch_up(self, sub: Subscription, into: Path) -> None:
        try:
            hits = await self._search(sub.query)
        except errors.P2PShareError as exc:
            log.info("subscription %s: search failed: %s", sub.id, exc)
            return
        me = self._me()
        for hit in hits:
            others = [p.address for p in hit.providers if p.address != me]
            if others:
                self._get(hit.content_id, hit.name, hit.size, others[0], into)

    def _get(self, content_id: str, name: str, size: int, provider: str, into: Path) -> None:
        try:
            self._fetch(content_id, name, size, provider, into)
        except errors.P2PShareError as exc:
            log.info("subscription: cannot fetch %s: %s", name, exc)

    def _load(self) -> list[Subscription]:
        try:
            doc = json.loads(self._path.read_text())
            return [
                Subscription(id=str(s["id"]), query=str(s["query"]), into=str(s["into"]))
                for s in doc["subscriptions"]
            ][:MAX_SUBSCRIPTIONS]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", self._path, exc)
            return []

    def _save(self) -> None:
        doc = {"subscriptions": [asdict(s) for s in self._subs.values()]}
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            raise errors.P2PShareError(f"cannot save subscriptions to {self._path}: {exc}") from exc
