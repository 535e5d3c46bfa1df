"""Bad input gets a clear error, loses nothing, and never reaches outside a share."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.localnet import LocalNetwork
from tests.integration.helpers import api, cli, write_random

pytestmark = pytest.mark.integration
UNKNOWN_ID = "ab" * 32


def assert_one_clear_line(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stderr
    stderr = result.stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("p2pshare: ")


def test_get_of_an_unknown_content_id_fails_with_one_line(net: LocalNetwork) -> None:
    tracker = net.start_tracker()
    peer = net.start_peer("p", tracker=tracker.url)
    result = cli("get", UNKNOWN_ID, "--api", peer.api)
    assert_one_clear_line(result, 1)
    assert "no peer provides" in result.stderr


def test_get_of_a_malformed_or_unseen_prefix_is_refused(net: LocalNetwork) -> None:
    peer = net.start_peer("p")
    assert_one_clear_line(cli("get", "../etc/passwd", "--api", peer.api), 2)
    result = cli("get", "abcdef", "--api", peer.api)
    assert_one_clear_line(result, 2)
    assert "search first" in result.stderr


def test_cli_without_a_running_peer_says_how_to_start_one(tmp_path: Path) -> None:
    result = cli("search", "x", "--api", "http://127.0.0.1:9")
    assert_one_clear_line(result, 3)
    assert "p2pshare peer" in result.stderr


def test_a_bad_config_value_stops_the_process_naming_the_key(tmp_path: Path) -> None:
    result = cli("peer", "--advertise", "nowhere", "--data", str(tmp_path))
    assert_one_clear_line(result, 2)
    assert "peer.advertise" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text("[peer]\npiece_size = 1000\n")
    result = cli("peer", "--config", str(config))
    assert_one_clear_line(result, 2)
    assert "peer.piece_size" in result.stderr


def test_a_tracker_database_that_cannot_be_opened_stops_it_naming_the_key(
    tmp_path: Path,
) -> None:
    result = cli("tracker", "--port", "0", "--db", str(tmp_path / "no such folder" / "t.db"))
    assert_one_clear_line(result, 2)
    assert "tracker.db" in result.stderr


def test_control_api_answers_malformed_requests_with_readable_422(net: LocalNetwork) -> None:
    peer = net.start_peer("p")
    bad_json = httpx.post(
        peer.api + "/v1/downloads",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert bad_json.status_code == 422
    assert "error" in bad_json.json()
    missing = httpx.post(peer.api + "/v1/downloads", json={"out_dir": "/tmp"})
    assert missing.status_code == 422
    assert "content_id" in missing.json()["error"]
    unknown = httpx.get(peer.api + f"/v1/downloads/{UNKNOWN_ID}")
    assert unknown.status_code == 404


def test_grpc_answers_bad_requests_with_status_codes(net: LocalNetwork, tmp_path: Path) -> None:
    write_random(tmp_path / "p" / "share" / "f.bin", 100_000)
    peer = net.start_peer("p")
    content_id = api(peer, "/v1/files")["files"][0]["content_id"]
    with grpc.insecure_channel(peer.address) as channel:
        stub = pb_grpc.PeerStub(channel)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetManifest(pb.ManifestRequest(content_id=UNKNOWN_ID), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as malformed:
            stub.GetManifest(pb.ManifestRequest(content_id="../../etc/passwd"), timeout=5)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as out_of_range:
            list(stub.GetPieces(pb.PiecesRequest(content_id=content_id, indexes=[99]), timeout=5))
        assert out_of_range.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        pieces = list(stub.GetPieces(pb.PiecesRequest(content_id=content_id, indexes=[0])))
        assert pieces[0].data == (tmp_path / "p" / "share" / "f.bin").read_bytes()


def test_symlinks_out_of_the_share_are_neither_listed_nor_served(
    net: LocalNetwork, tmp_path: Path
) -> None:
    secret = write_random(tmp_path / "outside" / "secret.key", 5000)
    share = tmp_path / "p" / "share"
    share.mkdir(parents=True)
    os.symlink(secret, share / "innocent.txt")
    os.symlink(secret.parent, share / "folder")
    write_random(share / "fine.txt", 10)
    tracker = net.start_tracker()
    peer = net.start_peer("p", tracker=tracker.url)
    assert [f["name"] for f in api(peer, "/v1/files")["files"]] == ["fine.txt"]
    assert api(peer, "/v1/search", q="secret")["hits"] == []
    assert api(peer, "/v1/search", q="innocent")["hits"] == []
