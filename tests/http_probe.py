"""Every request a tracker answers, listed from its OpenAPI document, to probe them all."""

from __future__ import annotations

from typing import Any

# not in the OpenAPI document, served all the same; and a path that matches no route
EXTRA = [
    ("GET", "/openapi.json", {}),
    ("GET", "/docs", {}),
    ("GET", "/docs/oauth2-redirect", {}),
    ("GET", "/redoc", {}),
    ("GET", "/metrics", {}),
    ("GET", "/v1/events", {}),
    ("GET", "/no/such/route", {}),
]
_VALUES = {"peer_id": "p1", "content_id": "ab" * 32, "sub_id": "s1"}


def requests_of(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, query) of every operation in ``spec``, path parameters filled in and
    required query parameters given (so the tracker's fast path sees a plain search),
    then ``EXTRA``."""
    out = []
    for template, operations in spec["paths"].items():
        for method, op in operations.items():
            path = template
            query = {}
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    path = path.replace("{" + param["name"] + "}", _VALUES.get(param["name"], "x"))
                elif param["in"] == "query" and param.get("required"):
                    query[param["name"]] = "x"
            out.append((method.upper(), path, query))
    seen = {(m, p) for m, p, _ in out}
    return out + [e for e in EXTRA if (e[0], e[1]) not in seen]
