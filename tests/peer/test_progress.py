"""The rate a download shows: what arrived over the last seconds, up to now."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pshare.peer.transfer import progress
from p2pshare.peer.transfer.progress import Download


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_the_rate_is_what_arrived_over_the_last_two_seconds(clock: Clock) -> None:
    download = Download("c" * 64, Path("."))
    for _ in range(40):  # 1 MiB every 0.1 s: 10 MiB/s
        download.add_bytes(1 << 20)
        clock.now += 0.1
    assert download.rate == pytest.approx(10 << 20, rel=0.06)


def test_a_stall_brings_the_rate_to_zero_and_not_the_last_speed(clock: Clock) -> None:
    download = Download("c" * 64, Path("."))
    for _ in range(40):
        download.add_bytes(1 << 20)
        clock.now += 0.1
    clock.now += 1.0
    assert 0 < download.rate < 6 << 20  # half the window without anything
    clock.now += 1.5
    assert download.rate == 0.0
