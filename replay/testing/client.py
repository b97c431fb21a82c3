"""A small synchronous client for the control API (standard library HTTP, orjson)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

from replay.errors import ReplayError


class ControlError(ReplayError):
    """The server refused a control request; status and message come from its error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ReplayClient:
    """Drive a running imds-replay server: sessions, time, and the IMDS endpoint itself."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        """Sent as 'Authorization: Bearer TOKEN' (a server off loopback needs it)."""
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                error = orjson.loads(exc.read())["error"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise ControlError(exc.code, exc.reason) from None
            raise ControlError(error["status"], error["message"]) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ReplayError(
                f"cannot reach the replay server at {self.base_url}: {reason}"
            ) from None

    def traces(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/replay/traces")
        return result

    def sessions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/replay/sessions")
        return result

    def start(
        self,
        trace: str,
        *,
        session: str = "default",
        speed: float | str = 1,
        loop: bool = False,
        resources: Sequence[str] | None = None,
        start: str = "now",
        approval_delay_s: float = 0.0,
        recorded_approvals: bool = False,
    ) -> dict[str, Any]:
        """Create (or replace) a session playing a trace; returns its status."""
        body: dict[str, Any] = {
            "name": session,
            "trace": trace,
            "speed": speed,
            "loop": loop,
            "start": start,
            "approval_delay_s": approval_delay_s,
            "recorded_approvals": recorded_approvals,
        }
        if resources is not None:
            body["resources"] = list(resources)
        return self._session_call("POST", "/replay/sessions", body)

    def _session_call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(method, path, body)
        return result

    def status(self, session: str = "default") -> dict[str, Any]:
        return self._session_call("GET", f"/replay/sessions/{session}")

    def delete(self, session: str = "default") -> None:
        self._call("DELETE", f"/replay/sessions/{session}")

    def pause(self, session: str = "default") -> dict[str, Any]:
        return self._session_call("POST", f"/replay/sessions/{session}/pause")

    def resume(self, session: str = "default") -> dict[str, Any]:
        return self._session_call("POST", f"/replay/sessions/{session}/resume")

    def seek(self, offset_s: float, session: str = "default") -> dict[str, Any]:
        """Move to an offset (trace seconds) of the current round."""
        return self._session_call(
            "POST", f"/replay/sessions/{session}/seek", {"offset_s": offset_s}
        )

    def step(self, session: str = "default") -> dict[str, Any]:
        """Jump to the next transition."""
        return self._session_call("POST", f"/replay/sessions/{session}/step")

    def advance(self, seconds: float | None = None, session: str = "default") -> dict[str, Any]:
        """Move trace time forward by seconds (trace), or to the next transition."""
        body = {} if seconds is None else {"seconds": seconds}
        return self._session_call("POST", f"/replay/sessions/{session}/advance", body)

    def set_speed(self, speed: float | str, session: str = "default") -> dict[str, Any]:
        return self._session_call("POST", f"/replay/sessions/{session}/speed", {"speed": speed})

    def documents(self, session: str = "default") -> list[dict[str, Any]]:
        """The documents the session's IMDS endpoint has served, in order."""
        result: list[dict[str, Any]] = self._call("GET", f"/replay/sessions/{session}/documents")
        return result
