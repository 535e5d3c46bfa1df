"""The hostile names table against every way a name or folder reaches a running peer or
tracker: a provider's manifest, the control API's ``out_dir`` and ``into``, the
tracker's index, the share folder's scan. Each is refused, and the file system shows
nothing was written outside the folders it belongs in.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import MIN_PIECE_SIZE, Manifest
from p2pshare.localnet import LocalNetwork, wait_for
from p2pshare.peer.rpc.wire import manifest_to_pb
from tests.hostile_names import HOSTILE, HOSTILE_NAMES, creatable
from tests.integration.helpers import api, join_as_provider, sha256

pytestmark = pytest.mark.integration

BENIGN = "fine/benign.bin"


def _encodable(name: str) -> bool:
    """Protobuf strings are UTF-8: a name with a lone surrogate cannot be sent at all."""
    return name.encode(errors="replace") == name.encode(errors="ignore")


def _confined(name: str, root: Path) -> str:
    """Absolute names moved under ``root``: if a check failed, the test must not write
    to this machine's /etc."""
    return f"{root}{name}" if name.startswith("/") else name


class LyingProvider:
    """A provider, in this process, that serves real content under any name it likes."""

    def __init__(self, names: list[str]) -> None:
        self.files: dict[str, tuple[Manifest, bytes]] = {}
        for i, name in enumerate(names):
            data = f"file {i} ".encode() * 3000  # two pieces
            pieces = [data[j : j + MIN_PIECE_SIZE] for j in range(0, len(data), MIN_PIECE_SIZE)]
            hashes = tuple(hashlib.sha256(p).digest() for p in pieces)
            manifest = Manifest(name, len(data), MIN_PIECE_SIZE, hashes)
            self.files[manifest.content_id] = (manifest, data)
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(
                self.hello, pb.HelloRequest.FromString, pb.HelloResponse.SerializeToString
            ),
            "GetManifest": grpc.unary_unary_rpc_method_handler(
                self.get_manifest, pb.ManifestRequest.FromString, pb.Manifest.SerializeToString
            ),
            "GetHave": grpc.unary_unary_rpc_method_handler(
                self.get_have, pb.HaveRequest.FromString, pb.HaveMap.SerializeToString
            ),
            "GetPieces": grpc.unary_stream_rpc_method_handler(
                self.get_pieces, pb.PiecesRequest.FromString, pb.Piece.SerializeToString
            ),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("p2pshare.v1.Peer", handlers),)
        )
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.peer_id = ""  # its id at the tracker, once registered (the dial-back asks)
        self.server.start()

    def hello(self, request: Any, context: Any) -> pb.HelloResponse:
        me = pb.PeerInfo(peer_id=self.peer_id, address=self.address)
        return pb.HelloResponse(peer=me, protocol_version=1)

    def get_manifest(self, request: Any, context: Any) -> pb.Manifest:
        return manifest_to_pb(self.files[request.content_id][0])

    def get_have(self, request: Any, context: Any) -> pb.HaveMap:
        manifest = self.files[request.content_id][0]
        return pb.HaveMap(
            content_id=request.content_id, complete=True, piece_count=manifest.piece_count
        )

    def get_pieces(self, request: Any, context: Any) -> Iterator[pb.Piece]:
        manifest, data = self.files[request.content_id]
        for i in request.indexes:
            yield pb.Piece(index=i, data=data[manifest.piece_offset(i) :][:MIN_PIECE_SIZE])


def test_hostile_names_in_a_providers_manifest_are_never_written(
    net: LocalNetwork, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    names = [_confined(n, outside) for n in HOSTILE_NAMES if _encodable(n)]
    liar = LyingProvider([*names, BENIGN])
    try:
        (tmp_path / "tracker").mkdir()
        tracker = net.start_tracker(db=tmp_path / "tracker" / "tracker.db")
        peer = net.start_peer("p", tracker=tracker.url)
        entries = [
            {"content_id": cid, "name": f"innocent {i}.bin", "size": m.size}
            for i, (cid, (m, _)) in enumerate(liar.files.items())
        ]
        join_as_provider(liar, tracker.url, entries)
        # two levels below tmp_path: the relative escapes of the table stay inside it
        out = tmp_path / "a" / "b" / "out"
        out.mkdir(parents=True)
        for cid in liar.files:
            body = {"content_id": cid, "out_dir": str(out)}
            httpx.post(peer.api + "/v1/downloads", json=body, timeout=10).raise_for_status()

        def all_done() -> bool:
            return all(d["state"] in ("complete", "failed") for d in api(peer, "/v1/downloads"))

        wait_for(all_done, 30, "every download to end")
        views = {d["content_id"]: d for d in api(peer, "/v1/downloads")}
        assert len(views) == len(liar.files)
        for cid, (manifest, data) in liar.files.items():
            view = views[cid]
            if manifest.name == BENIGN:
                assert view["state"] == "complete", view
                assert (out / BENIGN).read_bytes() == data
            else:
                assert view["state"] == "failed", (manifest.name, view)
                assert "refusing the provider's file name" in view["error"], view
    finally:
        liar.server.stop(None)
    own = [tmp_path / "p", tmp_path / "logs", tmp_path / "tracker"]  # the processes' folders
    written = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and not any(p.is_relative_to(folder) for folder in own)
    ]
    assert written == [out / BENIGN]
    assert not outside.exists()


def test_hostile_folders_for_downloads_and_subscriptions_are_refused(
    net: LocalNetwork, tmp_path: Path
) -> None:
    """``get -o`` and ``subscribe --into``: every name of the table, and the peer's data
    folder, gets a 422 that says why; nothing is made."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    peer = net.start_peer("p", cwd=cwd)
    before = sorted(tmp_path.rglob("*"))
    folders = [n for n in HOSTILE_NAMES if _encodable(n)]
    folders += [str(peer.data), str(peer.data / "downloads"), str(peer.data / "new")]
    with httpx.Client(base_url=peer.api) as client:
        for folder in folders:
            got = client.post("/v1/downloads", json={"content_id": "ab" * 32, "out_dir": folder})
            assert got.status_code == 422, (folder, got.text)
            assert got.json()["error"].startswith("-o: "), got.text
            sub = client.post("/v1/subscriptions", json={"query": "x", "into": folder})
            assert sub.status_code == 422, (folder, sub.text)
            assert "into" in sub.json()["error"], sub.text
    assert api(peer, "/v1/downloads") == []
    assert api(peer, "/v1/subscriptions")["subscriptions"] == []
    assert sorted(p for p in tmp_path.rglob("*") if "logs" not in p.parts) == [
        p for p in before if "logs" not in p.parts
    ]


def test_hostile_names_in_a_share_folder_are_not_served(net: LocalNetwork, tmp_path: Path) -> None:
    """Files and symlinks of every creatable name of the table, and symlinks that leave
    the share folder: the scan shares only the plain file."""
    share = tmp_path / "p" / "share"
    secret = tmp_path / "outside" / "secret.key"
    secret.parent.mkdir()
    secret.write_bytes(os.urandom(1000))
    (share / "fine").mkdir(parents=True)
    (share / "fine" / "plain.bin").write_bytes(os.urandom(1000))
    made = []
    for i, name in enumerate(HOSTILE_NAMES):
        if not creatable(name):
            continue
        # at the top of the share, else (when taken) in a folder of its own
        top = share if not made else share / f"case {i}"
        path = Path(os.fsdecode(os.path.join(os.fsencode(top), os.fsencode(name))))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100))
        os.symlink(path, share / f"link {i}")  # a plain name linking to a hostile one
        made.append(name)
    os.symlink(secret, share / "innocent.txt")
    os.symlink(secret.parent, share / "folder")
    os.symlink("/etc/passwd", share / "passwd")
    assert len(made) > len(HOSTILE) / 2

    peer = net.start_peer("p")
    names = [f["name"] for f in api(peer, "/v1/files")["files"]]
    assert names == ["fine/plain.bin"]
    for probe in ("secret", "innocent", "passwd", "hidden", "con", "movie"):
        assert api(peer, "/v1/search", q=probe, source="overlay")["hits"] == []
    assert sha256(share / "fine" / "plain.bin")


def test_hostile_names_are_kept_out_of_the_trackers_index(net: LocalNetwork) -> None:
    """A peer registering or patching in a file under a hostile name gets a 422; the
    index (and so every search hit) only ever holds names that pass the checks."""
    tracker = net.start_tracker()
    with httpx.Client(base_url=tracker.url) as client:
        reg = client.post("/v1/peers", json={"address": "127.0.0.1:9", "files": []}).json()
        auth = {"authorization": f"Bearer {reg['token']}"}
        for name in (n for n in HOSTILE_NAMES if _encodable(n)):
            entry = {"content_id": "ab" * 32, "name": name, "size": 1}
            got = client.post("/v1/peers", json={"address": "127.0.0.1:9", "files": [entry]})
            assert got.status_code == 422, (name, got.text)
            patch = client.patch(
                f"/v1/peers/{reg['peer_id']}/files", json={"add": [entry]}, headers=auth
            )
            assert patch.status_code == 422, (name, patch.text)
        assert client.get("/healthz").json()["files"] == 0
        fine = {"content_id": "ab" * 32, "name": BENIGN, "size": 1}
        patched = client.patch(
            f"/v1/peers/{reg['peer_id']}/files", json={"add": [fine]}, headers=auth
        )
        assert patched.status_code == 200, patched.text
        assert client.get("/healthz").json()["files"] == 1
