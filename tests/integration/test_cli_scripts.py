"""The CLI as scripts use it: output that a pipe reads whole, failures that exit non-zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pshare.localnet import LocalNetwork
from tests.integration.helpers import api, cli, write_random

pytestmark = pytest.mark.integration


def test_get_prints_the_whole_path_on_one_line_into_a_pipe(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    name = "a-name-long-enough-to-pass-eighty-columns-with-its-folder.bin"
    original = write_random(tmp_path / "seed" / "share" / name, 1000)
    seed = net.start_peer("seed", tracker=tracker.url)
    leech = net.start_peer("leech", tracker=tracker.url)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    out = tmp_path / "downloads" / ("deep-" * 12)
    out.mkdir(parents=True)

    done = cli("get", content_id, "-o", str(out), "--api", leech.api)
    assert done.returncode == 0, done.stderr
    path, _ = done.stdout.split("  (")  # path=$(p2pshare get ... | cut ...) style
    assert "\n" not in done.stdout.rstrip("\n")
    assert Path(path) == out / name
    assert Path(path).read_bytes() == original.read_bytes()


def test_a_search_whose_every_source_failed_exits_non_zero_instead_of_printing_no_hits(
    net: LocalNetwork,
) -> None:
    tracker = net.start_tracker()
    peer = net.start_peer("p", tracker=tracker.url)
    tracker.stop()

    done = cli("search", "anything", "--source", "tracker", "--json", "--api", peer.api)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.startswith("p2pshare: search failed: tracker:")
