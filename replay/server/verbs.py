"""What the control routes of a session and of the fleet share: bodies, the anchor's verbs.

`verb_routes(prefix, target_of, status_of)` makes POST {prefix}/pause, /resume, /step, /seek,
/advance and /speed for anything with those verbs (a Session, the Fleet), each answering the
target's status. Bodies are JSON objects; a wrong one is a ControlError (the one error shape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web

from replay.core.faults import FaultWindow, parse_playbook
from replay.core.speed import parse_speed
from replay.server.middlewares import ControlError, json_response


async def body_of(request: web.Request) -> dict[str, Any]:
    """A control request's JSON object body ({} when empty)."""
    raw = await request.read()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ControlError(400, "body must be a JSON object")
    return value


def field(body: dict[str, Any], key: str, kinds: type | tuple[type, ...], default: Any) -> Any:
    """body[key] if it is of kinds (a bool only where kinds is bool), else default."""
    value = body.get(key, default)
    if value is not default and (
        not isinstance(value, kinds) or isinstance(value, bool) != (kinds is bool)
    ):
        raise ControlError(400, f"{key!r} has the wrong type: {value!r}")
    return value


def speed_of(body: dict[str, Any], default: Any = None) -> float:
    """The speed factor of a body: a number, or a string such as '60x', 'dev' or '200%'."""
    speed = body.get("speed", default)
    if speed is None and "speed" not in body:
        raise ControlError(400, "'speed' is required: a number or a string such as '60x'")
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise ControlError(400, f"'speed' has the wrong type: {speed!r}")
    return parse_speed(speed)


async def playbook_of(request: web.Request) -> tuple[tuple[FaultWindow, ...], int]:
    """A fault playbook and its seed from a body: a list of windows, or {playbook, seed}."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None
    seed = 0
    if isinstance(body, dict):
        seed = field(body, "seed", int, 0)
        body = body.get("playbook")
    return parse_playbook(body, "playbook"), seed


def documents_response(documents: Iterable[bytes]) -> web.Response:
    """The documents served, in order, as one JSON array (without parsing them again)."""
    return web.Response(
        body=b"[" + b",".join(documents) + b"]", content_type="application/json", charset="utf-8"
    )


class Movable(Protocol):
    """A replay on one anchor, as its control verbs see it."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def step(self) -> float | None: ...
    def seek(self, offset_s: float) -> None: ...
    def advance(self, seconds: float | None = None) -> float: ...
    def set_speed(self, speed: float) -> None: ...


T = TypeVar("T", bound=Movable)


def verb_routes(
    prefix: str,
    target_of: Callable[[web.Request], T],
    status_of: Callable[[T], dict[str, Any]],
) -> list[web.RouteDef]:
    """POST {prefix}/pause, /resume, /step, /seek, /advance, /speed: each moves the anchor of
    target_of(request) and answers status_of(target)."""

    def route(verb: str, act: Callable[[T, dict[str, Any]], object], body: bool) -> web.RouteDef:
        async def handler(request: web.Request) -> web.Response:
            target = target_of(request)
            act(target, await body_of(request) if body else {})
            return json_response(status_of(target))

        return web.post(f"{prefix}/{verb}", handler)

    return [
        route("pause", lambda target, _: target.pause(), body=False),
        route("resume", lambda target, _: target.resume(), body=False),
        route("step", lambda target, _: target.step(), body=False),
        route("seek", _seek, body=True),
        route("advance", _advance, body=True),
        route("speed", lambda target, body: target.set_speed(speed_of(body)), body=True),
    ]


def _seek(target: Movable, body: dict[str, Any]) -> None:
    if body.get("next") is True:
        target.step()
        return
    offset = field(body, "offset_s", (int, float), None)
    if offset is None:
        raise ControlError(400, "give 'offset_s' (trace seconds) or 'next': true")
    target.seek(float(offset))


def _advance(target: Movable, body: dict[str, Any]) -> None:
    seconds = field(body, "seconds", (int, float), None)
    target.advance(None if seconds is None else float(seconds))
