"""Names and errors from the network reach the terminal as text: no escape sequence
runs, no markup is read, no command crashes on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from p2pshare.localnet import LocalNetwork, wait_for
from tests.integration.helpers import api, cli, join_as_provider, wait_registered
from tests.integration.test_hostile_names import LyingProvider

pytestmark = pytest.mark.integration
MARKUP_NAMES = ["[/evil]", "[red on red]x", "[bold]b[/bold] [/]"]
ROGUE_ERROR = "\x1b[2J\x1b[H[/x] Download complete \x1b[32m100%"


class RudeProvider(LyingProvider):
    """Refuses every manifest with an error text meant for the downloader's terminal."""

    def get_manifest(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, ROGUE_ERROR)


def test_names_that_look_like_markup_are_listed_and_found_as_they_are(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    share = tmp_path / "p" / "share"
    share.mkdir(parents=True)
    for name in MARKUP_NAMES:  # "[/evil]" is the file "evil]" in the folder "["
        (share / name).parent.mkdir(parents=True, exist_ok=True)
        (share / name).write_text(name)
    peer = net.start_peer("p", tracker=tracker.url)
    wait_registered(peer)
    for command in (["ls"], ["search", "*"], ["search", "*", "--source", "overlay"]):
        done = cli(*command, "--api", peer.api)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        for name in MARKUP_NAMES:
            assert name in done.stdout, (command, done.stdout)


def test_a_rogue_providers_error_text_is_printed_escaped_by_get_and_status(
    net: LocalNetwork,
) -> None:
    rude = RudeProvider(["victim.bin"])
    try:
        tracker = net.start_tracker()
        peer = net.start_peer("p", tracker=tracker.url)
        ((cid, (manifest, _)),) = rude.files.items()
        entry = {"content_id": cid, "name": "victim.bin", "size": manifest.size}
        join_as_provider(rude, tracker.url, [entry])

        got = cli("get", cid, "--api", peer.api)
        assert got.returncode == 1
        assert "\x1b" not in got.stdout + got.stderr
        assert "\\x1b[2J\\x1b[H[/x] Download complete" in got.stderr
        wait_for(lambda: api(peer, f"/v1/downloads/{cid}")["state"] == "failed", 10, "failure")

        status = cli("status", "--api", peer.api)
        assert status.returncode == 0, status.stderr
        assert "\x1b" not in status.stdout
        assert "[/x] Download complete" in " ".join(status.stdout.split())  # a table wraps
    finally:
        rude.server.stop(None)
