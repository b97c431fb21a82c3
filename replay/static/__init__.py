"""The control page: plain HTML, CSS and JavaScript served at / (no build step)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent
ASSETS = ("app.js", "style.css")
"""The files served under /static/ (only these: the package's Python files stay private)."""
NO_CACHE = {"Cache-Control": "no-cache"}
"""Revalidate on each load (ETag / Last-Modified): an upgraded server never shows a stale page."""


async def page(request: web.Request) -> web.StreamResponse:
    """GET /: the control page (with ?token=TOKEN when the server has one)."""
    from replay.control import check_token

    denied = check_token(request)
    if denied is not None:
        return denied
    return web.FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)


def _asset(name: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / name, headers=NO_CACHE)

    return web.get(f"/static/{name}", handler)


ROUTES = [web.get("/", page), *(_asset(name) for name in ASSETS)]
