"""Print the simulation's figures: ``python -m tests.swarm_sim [seed]``."""

from __future__ import annotations

import sys

from tests.swarm_sim.sim import Rules, Swarm, Testbed

VARIANTS = {
    "legacy": ("legacy", Rules()),
    "block": ("block", Rules()),
    "block, no super-seeding": ("block", Rules(super_seeding=False)),
    "block, no copy at a time": ("block", Rules(copy_at_a_time=False)),
    "block, no choking": ("block", Rules(choking=False)),
}


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    print("| testbed | protocol | last done | T_min | / T_min | seeder sent | max received |")
    print("|---|---|---|---|---|---|---|")
    for name in ("default", "harder"):
        for label, (protocol, rules) in VARIANTS.items():
            r = Swarm(getattr(Testbed, name)(), protocol, seed=seed, rules=rules).run()
            print(
                f"| {name} | {label} | {r.last:.1f} s | {r.t_min:.1f} s | {r.ratio:.2f}"
                f" | {r.seeder_copies:.2f} copies | {r.max_received_copies:.2f} copies |"
            )


if __name__ == "__main__":
    main()
