"""What a peer says of its tracker is what holds now, not at the last heartbeat."""

from __future__ import annotations

import signal
import time

import pytest

from p2pshare.localnet import LocalNetwork, wait_for
from p2pshare.peer.discovery.tracker_session import STATUS_FRESH
from tests.integration.helpers import api, wait_registered

pytestmark = pytest.mark.integration


def test_status_says_unreachable_at_once_when_the_tracker_dies(
    net: LocalNetwork,
) -> None:
    tracker = net.start_tracker()
    peer = net.start_peer("p", tracker=tracker.url)
    wait_registered(peer)
    # an answer younger than STATUS_FRESH is taken as the state now: let it age
    last_ok = api(peer, "/v1/status")["tracker"]["last_ok"]
    wait_for(lambda: time.time() - last_ok > STATUS_FRESH, 10, "the registration to age")
    tracker.stop(signal.SIGKILL)

    # the next heartbeat is a third of the lease away: status must not wait for it
    state = api(peer, "/v1/status")["tracker"]["state"]
    assert state.startswith("unreachable: "), state
