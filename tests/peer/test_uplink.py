"""When the uplink tells its super-seeder that the link has room: streams faked (their
writes complete when the test says), the uplink's clock given."""

from __future__ import annotations

from collections.abc import Callable

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.rate import TokenBucket
from p2pshare.peer.rpc.uplink import IDLE_AGAIN, Uplink

BLOCK = 128 * 1024
RATE = 5_000_000  # bytes per second: a 40 Mbit/s uplink


class Stream:
    """The sending side of one Exchange stream; a block handed over is written (its
    bytes taken by the transport) when ``write`` is called."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writing: list[Callable[[], None]] = []
        self.asked = 0

    def put(self, message: pb.ExchangeMessage, on_sent: Callable[[], None] | None) -> None:
        if message.HasField("block") and on_sent is not None:
            self.writing.append(on_sent)

    def block(self, block: tuple[int, int]) -> tuple[bytes, bool]:
        return bytes(BLOCK), block[1] == 7

    def fail(self, exc: errors.P2PShareError) -> None:
        raise AssertionError(exc)

    def ask(self, uplink: Uplink) -> None:
        uplink.request(self, (self.asked // 8, self.asked % 8))
        self.asked += 1

    def write(self) -> None:
        self.writing.pop(0)()


async def test_a_busy_link_well_below_its_rate_asks_for_more_offers() -> None:
    now = 0.0
    looks: list[float] = []

    def offered() -> bool:
        looks.append(now)
        return True

    uplink = Uplink(rate=TokenBucket(0, 1, 0.0), on_idle=offered, clock=lambda: now)
    fast, lossy = Stream("fast"), Stream("lossy")
    for stream in (fast, lossy, fast, lossy, fast, lossy, fast, lossy):
        stream.ask(uplink)
    # 8 s at the link's rate, both streams asking as their blocks go: blocks stay queued
    # for both the whole time, and the link is full: no look
    while now < 8.0:
        for stream in (fast, lossy):
            now += BLOCK / RATE
            stream.ask(uplink)
            stream.write()
    assert looks == []
    # the lossy connection stalls with its blocks in writing (TCP after losses); the
    # fast one carries a third of the link: blocks are still queued, yet there is room
    start = now
    while now < start + 4.0:
        now += 3 * BLOCK / RATE
        fast.ask(uplink)
        fast.write()
    assert looks, "the uplink never said it had room"
    assert looks[0] - start < 1.5  # the 2 s average fell below 3/4 of the peak
    gaps = [b - a for a, b in zip(looks, looks[1:], strict=False)]
    assert min(gaps) >= IDLE_AGAIN  # and it said so at most every IDLE_AGAIN seconds
