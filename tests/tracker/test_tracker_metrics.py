"""``TrackerMetrics`` of a worker among several (the shared metrics folder)."""

from __future__ import annotations

from p2pshare.tracker.metrics import TrackerMetrics


def test_a_worker_starts_beside_another_whose_metrics_file_is_still_empty(tmp_path):
    # a worker starting at the same time has created its file, not yet sized it
    (tmp_path / "gauge_livemostrecent_999.db").write_bytes(b"")
    TrackerMetrics(shared=tmp_path)
