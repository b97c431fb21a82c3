"""make_app: the aiohttp application, its one route list, and what lives and dies with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from replay.clock import Clock
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry
from replay.server import control, fleet, fleet_control, imds, page, streams
from replay.server.fanout import make_pool
from replay.server.keys import ALLOWED_HOSTS, CLOCK, FANOUT_POOL, FANOUTS, FLEET, REGISTRY
from replay.server.middlewares import MIDDLEWARES

ROUTES = [
    *imds.ROUTES,
    *fleet.ROUTES,
    *control.ROUTES,
    *fleet_control.ROUTES,
    *streams.ROUTES,
    *page.ROUTES,
    imds.CATCH_ALL,
]
"""Every route: IMDS, the control API under /replay/, push streams, the page; then 404s."""


def make_app(
    registry: SessionRegistry,
    *,
    clock: Clock,
    allowed_hosts: Iterable[str] = (),
    fleet_host: FleetHost | None = None,
) -> web.Application:
    """The server: IMDS routes for every session, the control API, streams and the page.

    allowed_hosts: host names (besides loopback names and IP literals) that the control API,
    page and streams answer to, e.g. the name the server is reached by.
    fleet_host: a fleet server: /metadata/... answers as the VM of the client's address
    (replay.server.fleet). Without it, a fleet loaded by the control API is reached at
    /vm/{name}/ only.
    """
    app = web.Application(client_max_size=imds.MAX_BODY, middlewares=MIDDLEWARES)
    app[REGISTRY] = registry
    app[CLOCK] = clock
    app[ALLOWED_HOSTS] = frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app[FANOUTS] = {}
    app[FLEET] = FleetHost(clock) if fleet_host is None else fleet_host
    app.router.add_routes(ROUTES if fleet_host is None else [*fleet.BY_ADDRESS, *ROUTES])
    app.cleanup_ctx.append(_fanout_pool)
    app.cleanup_ctx.append(_tickers)
    return app


async def _fanout_pool(app: web.Application) -> AsyncIterator[None]:
    pool = app[FANOUT_POOL] = make_pool()
    yield
    pool.shutdown(wait=True, cancel_futures=True)


async def _tickers(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    registry.start_all()
    app[FLEET].start()
    yield
    app[FLEET].stop()
    registry.stop_all()
    registry.schedules.clear()
