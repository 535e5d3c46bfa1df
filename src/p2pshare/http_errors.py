"""One mapping from the p2pshare error tree to HTTP answers, for every FastAPI app.

Every error body is ``{"error": "what was wrong"}``; a user's mistake never gets a
stack trace, and a crash of ours gets a 500 with one line (the trace goes to the log).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from p2pshare import errors

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[errors.P2PShareError], int]] = [
    (errors.NotFound, 404),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.UsageError, 422),
    (errors.Busy, 429),
    (errors.DownloadFailed, 409),
    (errors.RemoteError, 502),
    (errors.TransportError, 502),
]


def status_of(exc: errors.P2PShareError) -> int:
    """The HTTP status that an error of ours is answered with."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line per problem: where, and what is wrong."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where = loc[0] + (": " + ".".join(loc[1:]) if loc[1:] else "")
        else:
            where = ".".join(loc) or "request"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error")
            msg = f"malformed JSON ({detail})" if detail else "malformed JSON"
        problems.append(f"{where}: {msg}")
    return "; ".join(problems[:10]) or "invalid request"


def install(app: FastAPI, *, name: str) -> None:
    """Answer every error of ``app`` (the ``name`` of the service, for crash lines)."""

    async def ours(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.P2PShareError)
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(status, str(exc))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, describe_validation(exc))

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return error_response(500, f"internal error of the {name}")

    app.add_exception_handler(errors.P2PShareError, ours)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(Exception, crash)
