"""Subscriptions at one peer, with the network faked: when each publisher's listing is
taken, against the change stream (a change just before the stream opened must be in
one or the other)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from p2pshare import errors
from p2pshare.core.pubsub import ADDED, ShareChange
from p2pshare.core.sync import FileVersion
from p2pshare.peer.overlay.subscriptions import Subscription, Subscriptions
from p2pshare.peer.sync.engine import FolderSync
from p2pshare.tracker.models import PeerRef, SearchHit

A, B = "10.0.0.1:1", "10.0.0.2:1"
CID = "c" * 64


class Net:
    """The fakes: a change stream opened (``on_open``) when the test says, a search
    answered when the test says, listings recorded."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.answer = asyncio.Event()
        self.found: list[SearchHit] = []
        self.stream: asyncio.Queue[ShareChange] = asyncio.Queue()
        self.log: list[str] = []
        self.offered: list[tuple[str, str]] = []

    async def changes(
        self, query: str, *, on_open: Callable[[], None]
    ) -> AsyncIterator[ShareChange]:
        await self.opened.wait()
        self.log.append("open")
        on_open()
        while True:
            yield await self.stream.get()

    async def search(self, query: str) -> list[SearchHit]:
        self.log.append("search")
        await self.answer.wait()
        return self.found

    async def listing(self, provider: str, query: str) -> list[tuple[str, FileVersion]]:
        self.log.append(f"list {provider}")
        return []

    def folder(self, sub: Subscription) -> FolderSync:
        net = self

        class Folder:
            def offer(self, name: str, provider: str, version: Any = None) -> None:
                net.offered.append((name, provider))

            async def close(self) -> None:
                pass

        return cast(FolderSync, Folder())


def subscriptions(net: Net, tmp_path: Path) -> Subscriptions:
    (tmp_path / "data").mkdir()
    return Subscriptions(
        data_dir=tmp_path / "data",
        search=net.search,
        changes=net.changes,
        listing=net.listing,
        folder=net.folder,
        me=lambda: "10.0.0.9:1",
    )


def hit(provider: str) -> SearchHit:
    return SearchHit(
        content_id=CID, name="x.dat", size=1, providers=[PeerRef(peer_id="", address=provider)]
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_no_listing_is_taken_before_the_change_stream_is_open(tmp_path: Path) -> None:
    net = Net()
    subs = subscriptions(net, tmp_path)
    subs.add("*.dat", str(tmp_path / "into"))
    net.found = [hit(A)]
    net.answer.set()
    await settle()
    assert net.log == []  # neither search nor listing while the stream is not open
    net.opened.set()
    await settle()
    assert net.log == ["open", "search", f"list {A}"]
    await subs.close()


async def test_a_publisher_heard_on_the_stream_first_is_listed_all_the_same(
    tmp_path: Path,
) -> None:
    net = Net()
    subs = subscriptions(net, tmp_path)
    subs.add("*.dat", str(tmp_path / "into"))
    net.opened.set()
    await settle()
    assert net.log == ["open", "search"]  # the search runs (the overlay takes seconds)
    net.stream.put_nowait(ShareChange(ADDED, CID, "late.dat", 1, A, ""))
    await settle()
    assert ("late.dat", A) in net.offered
    assert f"list {A}" in net.log  # what A changed before the stream opened
    net.found = [hit(A), hit(B)]
    net.answer.set()
    await settle()
    assert net.log.count(f"list {A}") == 1 and f"list {B}" in net.log
    assert [s.publishers for s in subs.all()] == [(A, B)]
    await subs.close()


async def test_a_folder_the_same_as_inside_or_holding_another_subscriptions_is_refused(
    tmp_path: Path,
) -> None:
    subs = subscriptions(Net(), tmp_path)
    home = tmp_path / "home"
    first = subs.add("*.dat", str(home / "music"))
    assert subs.add("*.dat", str(home / "music")) == first  # the same one again: itself
    for into, how in [
        (home / "music", "is the folder of"),
        (home / "music" / "rock", "is inside the folder of"),
        (home, "holds the folder of"),
    ]:
        with pytest.raises(errors.UsageError, match=f"{how} subscription {first.id}"):
            subs.add("*.mp3", str(into))
    beside = subs.add("*.mp3", str(home / "musicals"))  # a namesake, not inside
    assert [s.id for s in subs.all()] == [first.id, beside.id]
    await subs.close()
