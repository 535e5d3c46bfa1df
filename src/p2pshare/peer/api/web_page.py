"""The web page of a peer: plain HTML, CSS and JavaScript files shipped in the wheel
(``web/``), served at ``/`` of the control API.

No build step and nothing fetched from elsewhere: the page works offline. The files
themselves hold no private data, so they are served without the token (a browser
cannot send one on a navigation); every request the page makes for data carries
it, and the Host/Origin gate of the control API applies to the files too. A strict
Content-Security-Policy allows only the page's own scripts, styles and requests:
no inline script, no other origin, no framing.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Response

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "logic.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""Every file of the page (``web/NAME``, served at ``/web/NAME``; index.html at ``/``)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def is_page_asset(path: str) -> bool:
    """Whether ``path`` is one of the page's files (served without the token)."""
    return path == "/" or (path.startswith("/web/") and path[5:] in ASSETS)


def asset(name: str) -> bytes:
    """The bytes of ``web/NAME`` as the wheel ships them."""
    return resources.files("p2pshare.peer.api").joinpath("web", name).read_bytes()


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files at ``/web/NAME`` of ``app``."""

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(asset("index.html"), media_type=ASSETS["index.html"], headers=HEADERS)

    @app.get("/web/{name}", include_in_schema=False)
    async def web_file(name: str) -> Response:
        if name not in ASSETS:
            return Response(b"not found", status_code=404, headers=HEADERS)
        return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)
