"""The OpenAPI description of the control API (served at /replay/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
        }
    },
}
_STATUS = {"type": "object", "description": "A session's status (see README)."}
_SESSION = {"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary: str, body: dict[str, Any] | None = None, ok: int = 200) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok): {"description": "OK", "content": {"application/json": {"schema": _STATUS}}},
            "400": {
                "description": "Bad request",
                "content": {"application/json": {"schema": _ERROR}},
            },
            "404": {
                "description": "Not found",
                "content": {"application/json": {"schema": _ERROR}},
            },
        },
    }
    if body is not None:
        op["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object", "properties": body}}},
        }
    return op


_SPEED = {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}
_CREATE = {
    "name": {"type": "string", "default": "default"},
    "trace": {"type": "string"},
    "speed": _SPEED,
    "loop": {"type": "boolean"},
    "resources": {"type": "array", "items": {"type": "string"}},
    "start": {"type": "string", "enum": ["now", "first-request", "virtual"]},
    "approval_delay_s": {"type": "number", "minimum": 0},
    "recorded_approvals": {"type": "boolean"},
}


def _session_path(summary: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"parameters": [_SESSION], "post": _op(summary, body)}


_VM = {"name": "vm", "in": "path", "required": True, "schema": {"type": "string"}}
_FLEET = {
    **{k: v for k, v in _CREATE.items() if k not in ("name", "trace", "resources")},
    "fleet": {"type": "object", "description": "The fleet file's tables: group, vm"},
    "rate_limit": {"type": "integer", "minimum": 1},
    "faults": {"type": "array", "description": "A fault playbook for every VM without its own"},
    "fault_seed": {"type": "integer"},
    "warm_up_s": {"type": "number", "minimum": 0},
}
_PLAYBOOK = {"playbook": {"type": "array"}, "seed": {"type": "integer"}}
FLEET_PATHS: dict[str, Any] = {
    "/replay/fleet": {
        "get": _op("The fleet's status: its anchor, groups, VMs and approvals"),
        "post": _op("Load (or replace) the fleet", _FLEET, ok=201),
        "delete": _op("Stop and remove the fleet"),
    },
    "/replay/fleet/pause": {"post": _op("Pause the fleet's trace time")},
    "/replay/fleet/resume": {"post": _op("Resume the fleet's trace time")},
    "/replay/fleet/step": {"post": _op("Jump to the fleet's next transition")},
    "/replay/fleet/seek": {
        "post": _op(
            "Seek every VM to an offset of the current round, or to the next transition",
            {"offset_s": {"type": "number", "minimum": 0}, "next": {"type": "boolean"}},
        )
    },
    "/replay/fleet/advance": {
        "post": _op(
            "Move the fleet's trace time forward by seconds, or to the next transition",
            {"seconds": {"type": "number", "minimum": 0}},
        )
    },
    "/replay/fleet/speed": {"post": _op("Change the fleet's speed", {"speed": _SPEED})},
    "/replay/fleet/faults": {
        "put": _op("Give every VM a fault playbook, each with its own draws", _PLAYBOOK),
        "delete": _op("Remove every VM's fault playbook"),
    },
    "/replay/fleet/vms/{vm}": {"parameters": [_VM], "get": _op("A VM's status and document")},
    "/replay/fleet/vms/{vm}/faults": {
        "parameters": [_VM],
        "put": _op(
            "Give this VM a fault playbook (a list of windows, or {playbook, seed})", _PLAYBOOK
        ),
        "delete": _op("Remove this VM's fault playbook"),
    },
    "/replay/fleet/vms/{vm}/approve": {
        "parameters": [_VM],
        "post": _op(
            "Approve EventIds as this VM (they start for all their Resources)",
            {"event_ids": {"type": "array", "items": {"type": "string"}}},
        ),
    },
    "/replay/fleet/vms/{vm}/documents": {
        "parameters": [_VM],
        "get": _op("The last 256 documents this VM was served, in order"),
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "imds-replay control API", "version": "1"},
    "paths": {
        "/replay/": {"get": _op("What the control API offers, with links to this and the page")},
        "/replay/traces": {"get": _op("List the traces the server can play")},
        "/replay/sessions": {
            "get": _op("List sessions with their status"),
            "post": _op("Create (or replace) a session", _CREATE, ok=201),
        },
        "/replay/sessions/{session}": {
            "parameters": [_SESSION],
            "get": _op("A session's status"),
            "delete": _op("Delete a session (the default one goes back to idle)"),
        },
        "/replay/sessions/{session}/pause": _session_path("Pause trace time"),
        "/replay/sessions/{session}/resume": _session_path("Resume trace time"),
        "/replay/sessions/{session}/step": _session_path("Jump to the next transition"),
        "/replay/sessions/{session}/seek": _session_path(
            "Seek to an offset of the current round, or to the next transition",
            {"offset_s": {"type": "number", "minimum": 0}, "next": {"type": "boolean"}},
        ),
        "/replay/sessions/{session}/advance": _session_path(
            "Move trace time forward by seconds, or to the next transition",
            {"seconds": {"type": "number", "minimum": 0}},
        ),
        "/replay/sessions/{session}/speed": _session_path("Change the speed", {"speed": _SPEED}),
        "/replay/sessions/{session}/faults": {
            "parameters": [_SESSION],
            "put": _op("Load a fault playbook (a list of windows, or {playbook, seed})", _PLAYBOOK),
            "delete": _op("Remove the session's fault playbook"),
        },
        "/replay/sessions/{session}/documents": {
            "parameters": [_SESSION],
            "get": _op("The last 256 documents the session's IMDS endpoint served, in order"),
        },
        **FLEET_PATHS,
    },
}
