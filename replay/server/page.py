"""The control page: plain HTML, CSS and JavaScript modules served at / (no build step)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}
"""Revalidate on each load (ETag / Last-Modified): an upgraded server never shows a stale page."""


def assets() -> tuple[str, ...]:
    """The files served under /static/: the page's scripts and styles, nothing else."""
    return tuple(sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in (".js", ".css")))


ASSETS = assets()


async def page(request: web.Request) -> web.StreamResponse:
    """GET /: the control page (with ?token=TOKEN when the server has one)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)


def _asset(name: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / name, headers=NO_CACHE)

    return web.get(f"/static/{name}", handler)


ROUTES = [web.get("/", page), *(_asset(name) for name in ASSETS)]
