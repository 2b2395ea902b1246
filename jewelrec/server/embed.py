"""What other sites use: the product-page widget (GET /widget.js) with CORS for the origins the
operator allows, and the API docs (GET /docs) served offline from the Swagger UI 5 files that
the swagger-ui-py package ships (5.x reads FastAPI's OpenAPI 3.1; swagger-ui-bundle's 4.x
cannot): no script from a CDN and none inline, as the page's CSP allows only scripts from this
server.

CORS is scoped: only the widget's API route (similar products) answers another origin, and only
an origin listed with `jewelrec serve --allow-origin`; every other route stays same-origin.
Images need no CORS (an <img> may load across origins).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from jewelrec.errors import JewelrecError
from jewelrec.server.files import file_answer

STATIC_DIR = Path(__file__).with_name("static")
# The routes a widget on another origin calls: GET /api/products/{id}/similar.
CORS_PATHS = re.compile(r"^/api/products/[^/]+/similar$")
# The Swagger UI files /docs needs, from the swagger-ui-py package (nothing else there).
DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")

router = APIRouter()


def check_origin(origin: str) -> str:
    """An origin as browsers send it in `Origin`, or JewelrecError. Browsers compare exactly and
    never write a default port or a non-ASCII host, so "https://shop.example:443" is kept as
    "https://shop.example" and "https://bijoux-é.example" in its punycode (IDNA) form; a
    wildcard could never match and is refused."""
    cleaned = origin.strip().rstrip("/").lower()
    refused = JewelrecError(f"--allow-origin {origin!r}: expected an origin such as "
                            "https://shop.example (scheme and host, optional port, no path)")
    if not _ORIGIN.match(cleaned):
        raise refused
    parts = urlsplit(cleaned)
    try:
        port = parts.port
    except ValueError:  # no number, or out of range
        raise refused from None
    host = parts.hostname or ""
    if "*" in host:
        raise JewelrecError(f"--allow-origin {origin!r}: wildcards are not supported; name "
                            "each site (repeat --allow-origin)")
    if not host or parts.username is not None:
        raise refused
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise JewelrecError(f"--allow-origin {origin!r}: the host cannot be written "
                                f"in ASCII ({exc})") from None
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class JsonCORS(CORSMiddleware):
    """Starlette's CORSMiddleware, whose refused preflight (origin, method or header not
    allowed) answers JSON with a `detail`, as every other error of the API does, not text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        kept = {k: v for k, v in response.headers.items()
                if k.lower() not in {"content-length", "content-type"}}
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        return JSONResponse({"detail": f"cross-origin request refused: its {refused} may not "
                                       "call this route (serve --allow-origin)"},
                            status_code=400, headers=kept)


class WidgetCORS:
    """CORSMiddleware for CORS_PATHS only, and only for `origins` (checked ones: see
    `check_origin`); other paths pass untouched.
    An origin not listed gets no Access-Control-Allow-Origin: its browser withholds the
    answer."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.cors = JsonCORS(
            app, allow_origins=list(origins), allow_methods=["GET"],
            allow_credentials=False, max_age=600,
        )
        self.enabled = bool(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and CORS_PATHS.match(scope["path"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


@router.api_route("/widget.js", methods=["GET", "HEAD"], include_in_schema=False)
def widget(request: Request) -> Response:
    """The product-page widget (see static/widget.js for the snippet)."""
    return file_answer(request, STATIC_DIR / "widget.js", media_type="text/javascript",
                       cache_control="public, max-age=3600")


@router.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
def docs(request: Request) -> Response:
    """Swagger UI for /openapi.json, every file from this server."""
    return file_answer(request, STATIC_DIR / "docs.html", cache_control="no-cache")


@router.api_route("/docs/assets/{name}", methods=["GET", "HEAD"], include_in_schema=False)
def docs_asset(name: str, request: Request) -> Response:
    if name not in DOCS_ASSETS:
        raise HTTPException(status_code=404, detail="no such file")
    return file_answer(request, swagger_ui_folder() / name, media_type=DOCS_ASSETS[name],
                       cache_control="public, max-age=86400")


def swagger_ui_folder() -> Path:
    """swagger-ui-py's static/ folder, found without importing the package (its __init__
    loads handlers for other web frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise HTTPException(status_code=404, detail="swagger-ui-py is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
