"""Shared test configuration (kept minimal; real-process helpers live in ``tests/procs.py``)."""
