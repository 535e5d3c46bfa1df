"""The supervisor program's own copy of prometheus_client's bookkeeping."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.metrics import Gauge
from prometheus_client.multiprocess import mark_process_dead

from p2pshare.tracker import supervisor


def _metrics_files(folder: Path) -> set[str]:
    """A worker folder's files: every gauge mode and other kinds, for two pids (one
    a prefix of the other's digits)."""
    names = [f"gauge_{mode}_{pid}.db" for mode in Gauge._MULTIPROC_MODES for pid in (12, 123)]
    names += [f"{kind}_{pid}.db" for kind in ("counter", "histogram") for pid in (12, 123)]
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return set(names)


def test_a_dead_worker_loses_the_same_files_as_with_prometheus_client(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    _metrics_files(ours)
    every = _metrics_files(theirs)
    supervisor._mark_process_dead(12, str(ours))
    mark_process_dead(12, str(theirs))
    left = {p.name for p in ours.iterdir()}
    assert left == {p.name for p in theirs.iterdir()}
    assert every - left == {
        f"gauge_live{m}_12.db" for m in ("all", "min", "max", "sum", "mostrecent")
    }
