"""The OpenAPI 3.1 document of the chat endpoints, with the mount prefix in its paths."""

from __future__ import annotations

import typing as t

from . import __version__
from .schema import PASSTHROUGH
from .schema import ROLES

__all__ = ["openapi_document"]

_ERROR_CODES = [
    "invalid_json",
    "invalid_request",
    "unsupported_media_type",
    "payload_too_large",
    "unauthorized",
    "model_not_allowed",
    "rate_limited",
    "budget_exceeded",
    "capacity_exceeded",
    "session_not_found",
    "upstream_bad_request",
    "upstream_unauthorized",
    "content_blocked",
    "insufficient_credits",
    "upstream_rate_limited",
    "upstream_unavailable",
    "upstream_timeout",
    "upstream_error",
    "upstream_interrupted",
    "too_long",
    "store_unavailable",
    "not_found",
    "method_not_allowed",
    "internal_error",
]

_SESSION_ID = {
    "name": "sessionId",
    "in": "path",
    "required": True,
    "description": "The id returned by POST /prepare.",
    "schema": {"type": "string", "format": "uuid"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, t.Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("ErrorResponse")}},
    }


def _components() -> dict[str, t.Any]:
    error_object = {
        "type": "object",
        "required": ["code", "message", "status"],
        "properties": {
            "code": {"type": "string", "enum": _ERROR_CODES},
            "message": {"type": "string", "description": "For people: what and what to do."},
            "status": {"type": "integer"},
            "retryable": {"type": "boolean"},
            "field": {
                "type": "string",
                "description": "The offending field, e.g. messages[2].role",
            },
            "retryAfter": {"type": "integer", "description": "Seconds to wait (429, 503)."},
            "upstream": {"description": "The upstream's own error object, untouched."},
        },
    }
    return {
        "schemas": {
            "Message": {
                "type": "object",
                "required": ["role"],
                "additionalProperties": False,
                "properties": {
                    "role": {"type": "string", "enum": list(ROLES)},
                    "content": {
                        "oneOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {"type": "object", "required": ["type"]},
                            },
                            {"type": "null"},
                        ]
                    },
                    "name": {"type": "string"},
                    "tool_calls": {"type": "array"},
                    "tool_call_id": {"type": "string"},
                },
            },
            "PrepareRequest": {
                "type": "object",
                "required": ["messages"],
                "additionalProperties": False,
                "properties": {
                    "model": {"type": "string", "maxLength": 200},
                    "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
                    "stream": {"description": "Ignored: answers always stream."},
                    **{
                        key: {"description": f"Passed upstream unchanged: {expected}."}
                        for key, (_, expected) in PASSTHROUGH.items()
                    },
                },
            },
            "PrepareResponse": {
                "type": "object",
                "required": ["sessionId", "streamUrl", "expiresAt"],
                "properties": {
                    "sessionId": {"type": "string", "format": "uuid"},
                    "streamUrl": {"type": "string"},
                    "expiresAt": {"type": "string", "format": "date-time"},
                },
            },
            "Error": error_object,
            "ErrorResponse": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": _ref("Error")},
            },
            "ChunkEvent": {
                "description": "event: chunk. The upstream chat.completion.chunk as received, "
                "plus content: the text of choices[0].delta.content ('' when none).",
                "type": "object",
                "required": ["content"],
                "properties": {"content": {"type": "string"}, "choices": {"type": "array"}},
            },
            "DoneEvent": {
                "description": "event: done. The last event of a finished stream.",
                "type": "object",
                "required": ["finishReason", "model", "usage"],
                "properties": {
                    "finishReason": {
                        "type": ["string", "null"],
                        "description": "stop, length, tool_calls, …, or cancelled after DELETE",
                    },
                    "model": {"type": ["string", "null"]},
                    "usage": {"type": ["object", "null"]},
                },
            },
            "ErrorEvent": {"description": "event: error. The last event of a failed stream."}
            | error_object,
        }
    }


def openapi_document(prefix: str) -> dict[str, t.Any]:
    """The document, with every path under ``prefix`` (``""`` when standalone)."""
    stream_path = f"{prefix}/stream/{{sessionId}}"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ngai_chat",
            "version": __version__,
            "description": "Relay AI chat answers from OpenRouter to browsers as "
            "Server-Sent Events: POST /prepare, then GET the streamUrl with EventSource.",
        },
        "paths": {
            f"{prefix}/prepare": {
                "post": {
                    "summary": "Create a session for one answer",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("PrepareRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "The session; stream it at streamUrl.",
                            "content": {"application/json": {"schema": _ref("PrepareResponse")}},
                        },
                        "400": _error("invalid_json or invalid_request (field names it)"),
                        "401": _error("unauthorized: NGAI_API_TOKENS is set"),
                        "403": _error("model_not_allowed"),
                        "413": _error("payload_too_large"),
                        "415": _error("unsupported_media_type"),
                        "429": _error("rate_limited (Retry-After)"),
                        "503": _error("capacity_exceeded or store_unavailable (Retry-After)"),
                    },
                }
            },
            stream_path: {
                "get": {
                    "summary": "Stream the answer as Server-Sent Events",
                    "description": "Events: chunk (ChunkEvent), then exactly one done "
                    "(DoneEvent) or error (ErrorEvent); every event has an id. Resume with "
                    "the Last-Event-ID header or ?lastEventId=N. Errors, an unknown "
                    "session included, arrive as an error event in a 200 stream.",
                    "parameters": [
                        _SESSION_ID,
                        {
                            "name": "lastEventId",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "text/event-stream",
                            "content": {
                                "text/event-stream": {
                                    "schema": {
                                        "oneOf": [
                                            _ref("ChunkEvent"),
                                            _ref("DoneEvent"),
                                            _ref("ErrorEvent"),
                                        ]
                                    }
                                }
                            },
                        },
                        "204": {
                            "description": "Nothing more to send (the stream already ended, "
                            "or an unknown session was resumed): EventSource stops."
                        },
                    },
                },
                "delete": {
                    "summary": "Stop the answer",
                    "parameters": [_SESSION_ID],
                    "responses": {
                        "204": {"description": "Stopped; readers get done/cancelled."},
                        "401": _error("unauthorized: NGAI_API_TOKENS is set"),
                        "404": _error("session_not_found"),
                    },
                },
            },
            f"{prefix}/models": {
                "get": {
                    "summary": "The upstream's model list (cached)",
                    "parameters": [
                        {
                            "name": "free",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["1", "true"]},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": '{"data": [...]}; header Warning: 110 when stale',
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "502": _error("the upstream failed and no copy is cached"),
                    },
                }
            },
            f"{prefix}/health": {
                "get": {
                    "summary": "Liveness and counts",
                    "responses": {
                        "200": {"description": "status ok"},
                        "503": {"description": "status degraded: the store is unreachable"},
                    },
                }
            },
            f"{prefix}/metrics": {
                "get": {
                    "summary": "Prometheus metrics (NGAI_METRICS=1)",
                    "responses": {
                        "200": {"description": "text/plain; version=0.0.4"},
                        "404": _error("not_found: metrics are off"),
                    },
                }
            },
            f"{prefix}/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
            },
            f"{prefix}/": {
                "get": {
                    "summary": "The chat page",
                    "responses": {"200": {"description": "text/html"}},
                }
            },
        },
        "components": _components(),
    }
