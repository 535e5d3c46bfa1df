"""Fuzzing the REST APIs from their own OpenAPI specs (schemathesis): every operation
of the tracker and of a peer's control API, valid and invalid requests, against real
processes. No answer is a 5xx, and every answer is one the spec documents (status,
content type, body).

The operations come from the specs the processes serve, so a new route is fuzzed as
soon as it exists. Folders in requests (``into``, ``out_dir``) that are absolute are
moved under a sandbox folder: the folder checks themselves are tested with the hostile
names table (tests/peer/test_folders.py); here the test checks afterwards that nothing
was written anywhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

from p2pshare.localnet import LocalNetwork, PeerProc, TrackerProc
from tests.integration.helpers import write_random

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fuzz_http")]

EXAMPLES = 25
STREAM_EXAMPLES = 5
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
FOLDER_FIELDS = ("into", "out_dir")


class Services:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sandbox = root / "sandbox"
        self.cwd = root / "cwd"
        self.sandbox.mkdir()
        self.cwd.mkdir()
        self.net = LocalNetwork(root)
        self.tracker: TrackerProc = self.net.start_tracker()
        write_random(root / "p" / "share" / "some file.bin", 10_000)
        self.peer: PeerProc = self.net.start_peer("p", tracker=self.tracker.url, cwd=self.cwd)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    s = Services(tmp_path_factory.mktemp("fuzz-http"))
    try:
        yield s
    finally:
        s.net.stop_all()


def _confine(case: Any, sandbox: Path) -> Any:
    """An absolute folder in the body, moved under ``sandbox``."""
    body = case.body
    if isinstance(body, dict):
        for field in FOLDER_FIELDS:
            value = body.get(field)
            if isinstance(value, str) and value.startswith("/"):
                body[field] = f"{sandbox}/{value.lstrip('/')}"
    return case


def _streams(operation: Any) -> bool:
    """Whether the operation answers 200 with a server-sent event stream."""
    ok = operation.definition.raw.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def _fuzz_operation(operation: Any, base: str, sandbox: Path) -> list[str]:
    """Run the operation's valid and invalid examples; one line per failure found."""
    failures: list[str] = []
    streams = _streams(operation)
    with requests.Session() as session:

        def call(case: Any) -> None:
            if streams:
                # the stream never ends: check what the headers say and hang up
                kwargs = case.as_transport_kwargs(base_url=base)
                with session.request(**kwargs, stream=True, timeout=10) as response:
                    if response.status_code == 200:
                        media = response.headers.get("content-type", "")
                        assert media.startswith("text/event-stream"), media
                        return
                    response.content  # noqa: B018 - an error answer is short: read it
                case.validate_response(response, checks=CHECKS)
            else:
                case.call_and_validate(base_url=base, session=session, checks=CHECKS, timeout=35)

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode).map(
                lambda case: _confine(case, sandbox)
            )

            @settings(
                max_examples=STREAM_EXAMPLES if streams else EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(strategy)
            def run(case: Any) -> None:
                call(case)

            try:
                run()
            except Unsatisfiable:
                # nothing in this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def _fuzz_spec(base: str, sandbox: Path) -> tuple[list[str], list[str]]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", timeout=10)
    labels, failures = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        failures += _fuzz_operation(operation, base, sandbox)
    return labels, failures


def _written(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_the_tracker_api_answers_every_fuzzed_request_as_its_spec_says(
    services: Services,
) -> None:
    labels, failures = _fuzz_spec(services.tracker.url, services.sandbox)
    assert "POST /v1/peers" in labels and "GET /v1/events" in labels
    assert not failures, "\n\n".join(failures)
    assert services.tracker.alive()
    assert "Traceback" not in services.tracker.output(), services.tracker.output()[-3000:]


def test_the_control_api_answers_every_fuzzed_request_as_its_spec_says(
    services: Services,
) -> None:
    root = services.root
    labels, failures = _fuzz_spec(services.peer.api, services.sandbox)
    assert "POST /v1/subscriptions" in labels and "POST /v1/downloads" in labels
    assert not failures, "\n\n".join(failures)
    assert services.peer.alive()
    assert "Traceback" not in services.peer.output(), services.peer.output()[-3000:]
    # nothing was written outside the peer's own folders and the sandbox
    assert list(services.cwd.iterdir()) == []
    allowed = [root / "p", root / "sandbox", root / "logs", root / "cwd"]
    outside = [
        p
        for p in _written(root)
        if not any(p == a or p.is_relative_to(a) for a in allowed)
        and p.name not in ("tracker.db", "tracker.db-wal", "tracker.db-shm")
    ]
    assert outside == []
