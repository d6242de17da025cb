"""The web dashboard: static HTML/JS/CSS served by the API itself (no build step, no CDN).

`GET /` redirects to `/ui/`; `/ui/` serves index.html and `/ui/<path>` the other static files, in
sub-folders too (`/ui/js/views/jobs.js`): ES modules import each other by relative path.
The page is public (it holds no data); everything it shows it fetches from /v1 with the API key
the user enters, sent as `Authorization: Bearer <key>`. A strict Content-Security-Policy keeps
the page to same-origin scripts, styles and connections.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC_DIR = Path(__file__).parent / "static"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Small files, and the API version may change under them: always revalidate.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _static_files() -> dict[str, Path]:
    """The servable files by relative path (`js/app.js`): plain files under the static folder with a
    known media type. Listed, not resolved from the request, so no path can reach outside the folder."""
    if not STATIC_DIR.is_dir():
        return {}
    return {
        p.relative_to(STATIC_DIR).as_posix(): p
        for p in STATIC_DIR.rglob("*")
        if p.is_file() and p.suffix in MEDIA_TYPES
    }


def _serve(name: str) -> Response:
    path = _static_files().get(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
def ui_no_slash() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.api_route("/ui/", methods=["GET", "HEAD"])
def ui_index() -> Response:
    return _serve("index.html")


@router.api_route("/ui/{name:path}", methods=["GET", "HEAD"])
def ui_file(name: str) -> Response:
    return _serve(name)
