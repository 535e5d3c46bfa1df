"""One mapping from the p2pshare error tree to HTTP answers, for every FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from p2pshare import errors

_STATUS: list[tuple[type[errors.P2PShareError], int]] = [
    (errors.NotFound, 404),
    (errors.PermissionDenied, 403),
    (errors.UsageError, 422),
    (errors.TransportError, 503),
    (errors.RemoteError, 502),
    (errors.DownloadFailed, 409),
]


def status_for(exc: errors.P2PShareError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line per problem: where, and what is wrong."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    """Answer our errors and bad requests with ``{"error": message}`` and a 4xx/5xx status."""

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.P2PShareError)
        return JSONResponse({"error": str(exc)}, status_code=status_for(exc))

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"error": describe_validation(exc)}, status_code=422)

    app.add_exception_handler(errors.P2PShareError, on_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
