"""The swarm simulation: today's scheduling wastes the seeder's uplink as issue 13
measured; the new core comes within 1.2 x the minimum distribution time."""

from __future__ import annotations

import pytest

from tests.swarm_sim.sim import MBIT, MIB, HostSpec, Swarm, Testbed


def test_the_minimum_distribution_time_of_the_default_testbed() -> None:
    # 64 MiB at 40 Mbit/s: the seeder's uplink binds (Kumar and Ross 2006)
    assert Testbed.default().t_min() == pytest.approx(64 * MIB / (40 * MBIT))


@pytest.mark.parametrize("protocol", ["legacy", "block"])
def test_one_downloader_gets_the_file_at_the_seeders_upload_rate(protocol: str) -> None:
    testbed = Testbed(HostSpec(40 * MBIT), (HostSpec(40 * MBIT),), file_size=8 * MIB)
    result = Swarm(testbed, protocol).run()
    assert result.ratio == pytest.approx(1.0, abs=0.03)
    assert result.seeder_copies == pytest.approx(1.0, abs=0.01)


def test_a_slow_downlink_binds_when_it_is_the_slowest_link() -> None:
    testbed = Testbed(
        HostSpec(40 * MBIT), (HostSpec(40 * MBIT, down=10 * MBIT),), file_size=4 * MIB
    )
    assert testbed.t_min() == pytest.approx(4 * MIB / (10 * MBIT))
    assert Swarm(testbed, "block").run().ratio == pytest.approx(1.0, abs=0.03)


def test_todays_scheduling_makes_the_seeder_send_the_file_twice() -> None:
    """Haves polled once a second, every downloader keeping pieces in flight at the
    seeder, whole-piece endgame: the waste issue 13 measured on the testbed."""
    result = Swarm(Testbed.default(), "legacy").run()
    assert result.ratio > 2.0
    assert result.seeder_copies > 2.0
    # a downloader received > 1.3 copies until PiecePicker stopped duplicating pieces
    # before the real endgame (a provider with nothing fresh was taken for one)
    assert result.max_received_copies < 1.1


def test_the_new_core_reaches_the_minimum_distribution_time_on_the_default_testbed() -> None:
    result = Swarm(Testbed.default(), "block").run()
    assert len(result.finish) == 6
    assert result.ratio <= 1.2, result.summary()
    assert result.seeder_copies <= 1.2, result.summary()
    assert result.max_received_copies <= 1.05, result.summary()


def test_the_harder_variant_completes_for_every_downloader_that_stays() -> None:
    """Twelve downloaders at 10, 40 and 100 Mbit/s, one joining late, one leaving."""
    testbed = Testbed.harder()
    result = Swarm(testbed, "block").run()
    stayed = {i for i, d in enumerate(testbed.downloaders) if d.leave is None}
    assert set(result.finish) == stayed
    # not a goal of the issue: a guard against regressions (1.25 when written)
    assert result.ratio <= 1.35, result.summary()
    assert result.max_received_copies <= 1.05, result.summary()


def test_a_seeder_faster_than_its_downloaders_is_not_held_back_by_super_seeding() -> None:
    """100 Mbit/s seeder, six 10 Mbit/s downloaders: the minimum needs the seeder to send
    several copies; the spread limit must not idle it (1.79 x T_min without ``idle``)."""
    testbed = Testbed(
        HostSpec(100 * MBIT), tuple(HostSpec(10 * MBIT) for _ in range(6)), file_size=32 * MIB
    )
    result = Swarm(testbed, "block").run()
    assert result.ratio <= 1.2, result.summary()


def test_long_delays_do_not_leave_the_seeder_waiting() -> None:
    testbed = Testbed(
        HostSpec(40 * MBIT, delay=0.05),
        tuple(HostSpec(40 * MBIT, delay=0.05) for _ in range(2)),
        file_size=32 * MIB,
    )
    result = Swarm(testbed, "block").run()
    assert result.ratio <= 1.15, result.summary()
