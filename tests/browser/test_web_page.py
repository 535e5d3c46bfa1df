"""The web page of a peer in a real browser, against a real tracker and real peers:
search, download to 100 %, keyboard only, subscriptions, a stalled download's reason,
cancel, the token off loopback. Screenshots of each view go to test-artifacts/web/."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, TrackerProc, wait_for
from p2pshare.peer.transfer.partial import partial_path
from tests.browser.conftest import ARTIFACTS, screenshot
from tests.integration.helpers import api, sha256, wait_registered, write_random

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.xdist_group("browser")]


@dataclass
class Demo:
    tracker: TrackerProc
    seed: PeerProc
    fetcher: PeerProc
    root: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A tracker, a seed of three files and a fetcher whose downloads are limited to
    4 MiB/s (so progress can be seen)."""
    root = tmp_path_factory.mktemp("web")
    net = LocalNetwork(root)
    try:
        tracker = net.start_tracker()
        share = root / "seed" / "share"
        write_random(share / "holiday photos.zip", 3 << 20)
        write_random(share / "concert.flac", 600_000)
        write_random(share / "<b>not bold</b>.txt", 1000)
        config = root / "fetcher.toml"
        config.write_text(f"[peer]\nmax_download_rate = {4 << 20}\n")
        seed = net.start_peer("seed", tracker=tracker.url)
        fetcher = net.start_peer("fetcher", "--config", str(config), tracker=tracker.url)
        wait_registered(seed)
        wait_registered(fetcher)
        yield Demo(tracker, seed, fetcher, root)
    finally:
        net.stop_all()


def _search(page: Any, query: str) -> None:
    page.fill("#q", query)
    page.press("#q", "Enter")
    page.wait_for_selector("#hits tbody tr")


def _card(page: Any, name: str) -> Any:
    return page.locator("#transfers li.card", has=page.locator("h3", has_text=name))


def _wait_complete(page: Any, name: str, timeout: float = 20_000) -> None:
    page.wait_for_function(
        """name => [...document.querySelectorAll('#transfers li.card')].some(
            c => c.querySelector('h3').textContent === name && c.dataset.state === 'complete'
              && c.querySelector('progress').value === 100)""",
        arg=name,
        timeout=timeout,
    )


def test_search_then_download_reaches_100_percent_and_the_file_is_verified(
    demo: Demo, page: Any
) -> None:
    page.goto(demo.fetcher.api + "/")
    _search(page, "holiday")
    row = page.locator("#hits tbody tr").first
    assert row.locator("td.name").text_content() == "holiday photos.zip"
    assert row.locator("td").nth(1).text_content() == "3.00 MiB"
    page.wait_for_selector("#search-state:has-text('tracker: ok')")
    screenshot(page, "search")

    row.get_by_role("button", name="Download holiday photos.zip").click()
    page.click("nav a[data-view=transfers]")
    card = _card(page, "holiday photos.zip")
    card.wait_for()
    page.wait_for_function("() => document.querySelector('#transfers li.card progress').value > 0")
    screenshot(page, "transfers-in-progress")
    _wait_complete(page, "holiday photos.zip")
    got = demo.fetcher.share / "holiday photos.zip"
    assert sha256(got) == sha256(demo.seed.share / "holiday photos.zip")
    assert demo.seed.address in card.locator(".providers").text_content()
    assert "3.00 MiB" in card.locator(".providers").text_content()  # bytes per provider
    assert card.locator(".why").text_content().startswith("complete: ")
    assert "128 of 128" not in (card.locator("canvas").get_attribute("aria-label") or "?")
    assert "3 of 3 parts verified" in (card.locator("canvas").get_attribute("aria-label") or "")
    screenshot(page, "transfers")


def test_keyboard_alone_searches_and_downloads(demo: Demo, page: Any) -> None:
    page.goto(demo.fetcher.api + "/")

    def tab_to(selector: str, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(f"document.activeElement.matches({selector!r})"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#q")
    page.keyboard.type("concert")
    page.keyboard.press("Enter")
    page.wait_for_selector("#hits tbody tr button")
    tab_to("#hits button[aria-label='Download concert.flac']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#search-state:has-text('downloading concert.flac')")
    wait_for(lambda: (demo.fetcher.share / "concert.flac").exists(), 20, "concert.flac on disk")
    tab_to("nav a[data-view=transfers]")
    page.keyboard.press("Enter")
    _wait_complete(page, "concert.flac")
    assert sha256(demo.fetcher.share / "concert.flac") == sha256(demo.seed.share / "concert.flac")


def test_shared_files_and_network_views_show_the_peer_and_names_stay_text(
    demo: Demo, page: Any
) -> None:
    page.goto(demo.seed.api + "/#shared")
    page.wait_for_selector("#files tbody tr")
    names = page.locator("#files td.name").all_text_contents()
    assert "<b>not bold</b>.txt" in names  # shown as text, never as markup
    assert page.locator("#files b").count() == 0
    cids = {f["content_id"] for f in api(demo.seed, "/v1/files")["files"]}
    assert set(page.locator("#files code.cid").all_text_contents()) == cids
    page.get_by_role("button", name="Copy the content id of concert.flac").wait_for()
    screenshot(page, "shared")

    page.click("nav a[data-view=network]")
    facts = page.locator("#net")
    facts.locator("dd", has_text="registered").first.wait_for()
    text = facts.text_content() or ""
    assert "Private networkoff" in text and "TLS between peersoff" in text
    page.wait_for_function("() => document.querySelector('#graph-up').points.length >= 2")
    screenshot(page, "network")
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 380, "height": 800})
    screenshot(page, "network-dark-narrow")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1100, "height": 800})


def test_a_subscription_fetches_a_new_file(demo: Demo, page: Any) -> None:
    into = demo.root / "subscribed"
    page.goto(demo.fetcher.api + "/#subscriptions")
    page.get_by_label("Words or a glob to follow").fill("report")
    page.get_by_label("Into (absolute folder)").fill(str(into))
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_selector("#subs li.card:has-text('report')")
    new = write_random(demo.seed.share / "report 2026.pdf", 200_000)
    page.wait_for_selector("#subs .fetched li:has-text('report 2026.pdf (complete)')")
    assert sha256(into / "report 2026.pdf") == sha256(new)
    screenshot(page, "subscriptions")
    page.get_by_role("button", name="Remove the subscription to report").click()
    page.wait_for_selector("#subs li.card", state="detached")


def test_a_stalled_download_shows_why_and_cancel_deletes_it(
    demo: Demo, page: Any, tmp_path: Path
) -> None:
    net = LocalNetwork(tmp_path)
    try:
        write_random(tmp_path / "lone" / "share" / "lone.iso", 32 << 20)
        lone = net.start_peer("lone", tracker=demo.tracker.url)
        wait_registered(lone)
        page.goto(demo.fetcher.api + "/")
        _search(page, "lone")
        page.get_by_role("button", name="Download lone.iso").click()
        page.click("nav a[data-view=transfers]")
        card = _card(page, "lone.iso")
        page.wait_for_function(
            """() => [...document.querySelectorAll('#transfers li.card')].some(
                c => c.querySelector('h3').textContent === 'lone.iso'
                  && c.querySelector('progress').value > 0)"""
        )
        os.kill(lone.pid, signal.SIGKILL)  # the only provider vanishes
        card.locator(".why", has_text="provider").wait_for()
        why = card.locator(".why").text_content() or ""
        assert "not answering" in why or "no provider reachable" in why, why
        page.screenshot(path=str(ARTIFACTS / "transfers-stalled.png"))
        card.get_by_role("button", name="Cancel lone.iso").click()
        page.wait_for_selector("#transfers li.card[data-state=cancelled]")
        assert card.locator(".why").text_content() == "cancelled"
        assert not partial_path(demo.fetcher.share / "lone.iso").exists()
    finally:
        net.stop_all()


def test_off_loopback_the_page_asks_for_the_token_and_sends_it(
    net: LocalNetwork, page: Any
) -> None:
    peer = net.start_peer("open", env={"P2PSHARE_PEER_API_HOST": "0.0.0.0"})
    url = "http://127.0.0.1:" + peer.api.rsplit(":", 1)[1] + "/"
    page.goto(url)
    page.wait_for_selector("#token-form:not([hidden])")
    screenshot(page, "token")
    token = (peer.data / "api-token").read_text().strip()
    page.get_by_label("Control API token").fill(token)
    page.get_by_role("button", name="Use token").click()
    page.wait_for_selector("#peer-line:has-text('peer ')")
    assert page.locator("#token-form").is_hidden()
