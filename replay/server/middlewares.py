"""Middlewares: who may use the control API, page and streams, and the control error shape.

IMDS routes pass straight through: they answer exactly as IMDS does (clients send
`Host: 169.254.169.254`, no token). Everything else is ours:
- `guard` refuses a Host that does not name this server (a page the developer visits cannot
  reach a loopback server through DNS rebinding), a foreign Origin (cross-site requests), a
  control body that is not application/json (a form POST needs no preflight), and a missing
  token when the server has one;
- `control_errors` turns user errors under /replay/ into {"error": {"status", "message"}}.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import hdrs, web

from replay.errors import ReplayError, TraceNotFoundError
from replay.server.keys import ALLOWED_HOSTS, REGISTRY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IMDS_ROUTE = "imds_route"
"""Attribute set on IMDS handlers: the middlewares leave their requests alone. aiohttp wraps a
route's handler for each middleware with functools.update_wrapper, which copies it along."""
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def imds_route(handler: Handler) -> Handler:
    """Mark a handler as answering like IMDS (no guard, no control error shape)."""
    setattr(handler, IMDS_ROUTE, True)
    return handler


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(value), content_type="application/json", charset="utf-8"
    )


def control_error(status: int, message: str) -> web.Response:
    """The control API's one error shape."""
    return json_response({"error": {"status": status, "message": message}}, status)


class ControlError(Exception):
    """Raised by a control handler: answered as the error shape with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def host_of(value: str) -> str:
    """The host of a Host header or an Origin's netloc, lower case, without port or brackets."""
    host = urlsplit(f"//{value}").hostname
    return (host or "").lower()


def is_ours(host: str, allowed: frozenset[str]) -> bool:
    """Whether a host names this server: a loopback name, an IP literal, or an allowed name.

    An IP literal cannot be rebound to another address by DNS; a name can, so names must be
    loopback names or ones given with --allowed-host (or the host the server was bound to).
    """
    if host in allowed or host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def refusal(request: web.Request) -> web.Response | None:
    """The 403/415/401 answer for a request that may not use the control API, page or streams."""
    allowed = request.config_dict[ALLOWED_HOSTS]
    host = host_of(request.headers.get(hdrs.HOST, ""))
    if not is_ours(host, allowed):
        return control_error(
            403,
            f"Host {host or '(none)'!r} does not name this server; "
            "start it with --allowed-host NAME to use that name",
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and not is_ours(host_of(urlsplit(origin).netloc), allowed):
        return control_error(403, f"cross-site request from Origin {origin!r} refused")
    writes = request.method in ("POST", "PUT", "PATCH", "DELETE")
    if writes and request.body_exists and request.content_type != "application/json":
        return control_error(
            415, f"a control body must be application/json, not {request.content_type!r}"
        )
    token = request.config_dict[REGISTRY].token
    if token is None:
        return None
    given = request.headers.get(hdrs.AUTHORIZATION, "").removeprefix("Bearer ").strip()
    given = given or request.query.get("token", "")
    if hmac.compare_digest(given.encode(), token.encode()):
        return None
    return control_error(
        401, "this server needs its token: 'Authorization: Bearer TOKEN' or '?token=TOKEN'"
    )


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign hosts, origins, non-JSON bodies and missing tokens (not on IMDS routes)."""
    if getattr(handler, IMDS_ROUTE, False):
        return await handler(request)
    refused = refusal(request)
    if refused is not None:
        return refused
    return await handler(request)


@web.middleware
async def control_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """User errors in control handlers become the error shape (400, or 404 for unknown names)."""
    if getattr(handler, IMDS_ROUTE, False):
        return await handler(request)
    try:
        return await handler(request)
    except ControlError as exc:
        return control_error(exc.status, str(exc))
    except TraceNotFoundError as exc:
        return control_error(404, str(exc))
    except ReplayError as exc:
        return control_error(400, str(exc))
    except web.HTTPRequestEntityTooLarge:
        return control_error(413, "request body too large")


MIDDLEWARES = (guard, control_errors)
