"""The app's typed state (web.AppKey). This module imports nothing else of the server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from replay.clock import Clock
from replay.playback.fleet_host import FleetHost
from replay.playback.registry import SessionRegistry

if TYPE_CHECKING:
    from replay.server.fanout import Fanout

REGISTRY = web.AppKey("registry", SessionRegistry)
"""The sessions and traces this server plays."""
CLOCK = web.AppKey("clock", Clock)
FLEET = web.AppKey("fleet", FleetHost)
"""The fleet this server plays, if any (replay.server.fleet routes its IMDS requests)."""
ALLOWED_HOSTS = web.AppKey("allowed_hosts", frozenset[str])
"""Host names (lower case, no port) the control API, page and streams answer to, besides
loopback names and IP literals."""
FANOUTS: web.AppKey[dict[str, Fanout]] = web.AppKey("fanouts")
"""Push subscribers by session name (replay.server.fanout)."""
FANOUT_POOL = web.AppKey("fanout_pool", ThreadPoolExecutor)
"""Threads that write one push to many sockets at once; made and shut down with the app."""
