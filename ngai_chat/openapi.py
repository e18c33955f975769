"""The OpenAPI 3.1 document of the chat endpoints, with the mount prefix in its paths.

Nothing here restates a fact another module holds: error codes and statuses come
from the error tree (:mod:`ngai_chat.errors`), the request's keys, roles and
``maxLength`` from :mod:`ngai_chat.schema`, the ``free`` values from
:mod:`ngai_chat.catalog`. What stays written by hand is what each endpoint may
answer, by error class, and the prose.
"""

from __future__ import annotations

import typing as t

from . import errors
from ._version import __version__
from .catalog import FREE_VALUES
from .schema import IMAGE_TYPES
from .schema import MAX_MODEL_LENGTH
from .schema import MESSAGE_KEYS
from .schema import OWN_KEYS
from .schema import PASSTHROUGH
from .schema import ROLES

__all__ = ["error_classes", "openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


#: what each operation may answer with an HTTP error, besides internal_error
PREPARE_ERRORS: tuple[type[errors.ApiError], ...] = (
    errors.InvalidJson,
    errors.InvalidRequest,
    errors.Unauthorized,
    errors.ModelNotAllowed,
    errors.PayloadTooLarge,
    errors.UnsupportedMediaType,
    errors.RateLimited,
    errors.BudgetExceeded,
    errors.CapacityExceeded,
    errors.StoreUnavailable,
)
CANCEL_ERRORS: tuple[type[errors.ApiError], ...] = (
    errors.Unauthorized,
    errors.SessionNotFound,
    errors.StoreUnavailable,
)
METRICS_ERRORS: tuple[type[errors.ApiError], ...] = (errors.NotFound,)

#: the shapes of the message keys (the keys themselves are schema.MESSAGE_KEYS)
_MESSAGE_PROPERTIES: dict[str, dict[str, t.Any]] = {
    "role": {"type": "string", "enum": list(ROLES)},
    "content": {
        "oneOf": [
            {"type": "string"},
            {"type": "array", "items": _ref("ContentPart")},
            {"type": "null"},
        ]
    },
    "name": {"type": "string"},
    "tool_calls": {"type": "array"},
    "tool_call_id": {"type": "string"},
    "reasoning_details": {
        "type": "array",
        "description": "On assistant messages: the done event's reasoningDetails of that "
        "answer, sent back so the model keeps its reasoning. Passed upstream unchanged.",
    },
}

_IMAGE_DATA_URL = "^data:image/(" + "|".join(IMAGE_TYPES) + ");base64,"

#: the content parts a message may carry (SPEC §3; checked by schema._part)
_CONTENT_PART: dict[str, t.Any] = {
    "description": "A part of a message's content. A data URL must be base64 that "
    "decodes; anything else is a 400 naming the field "
    "(messages[0].content[1].image_url.url). Request bodies count against "
    "NGAI_MAX_BODY_BYTES each and NGAI_MAX_CLIENT_BYTES together.",
    "oneOf": [
        {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        },
        {
            "type": "object",
            "required": ["type", "image_url"],
            "properties": {
                "type": {"const": "image_url"},
                "image_url": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {
                        "url": {
                            "type": "string",
                            "anyOf": [{"pattern": "^https://."}, {"pattern": _IMAGE_DATA_URL}],
                        },
                        "detail": {"enum": ["auto", "low", "high"]},
                    },
                },
            },
        },
        {
            "type": "object",
            "required": ["type", "file"],
            "properties": {
                "type": {"const": "file"},
                "file": {
                    "type": "object",
                    "required": ["filename", "file_data"],
                    "properties": {
                        "filename": {"type": "string", "minLength": 1},
                        "file_data": {
                            "type": "string",
                            "anyOf": [
                                {"pattern": "^https://."},
                                {"pattern": "^data:application/pdf;base64,"},
                            ],
                        },
                    },
                },
            },
        },
        {
            "type": "object",
            "required": ["type", "input_audio"],
            "properties": {
                "type": {"const": "input_audio"},
                "input_audio": {
                    "type": "object",
                    "required": ["data", "format"],
                    "properties": {
                        "data": {"type": "string", "contentEncoding": "base64"},
                        "format": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
    ],
}

#: one tool call of the done event, as the upstream would have sent it unstreamed
_TOOL_CALL: dict[str, t.Any] = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": ["string", "null"]},
        "type": {"type": "string"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {
                "name": {"type": ["string", "null"]},
                "arguments": {
                    "type": "string",
                    "description": "The arguments' fragments concatenated in order (JSON text).",
                },
            },
        },
    },
}

#: the shapes of the request's own keys (the keys themselves are schema.OWN_KEYS)
_OWN_PROPERTIES: dict[str, dict[str, t.Any]] = {
    "model": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_MODEL_LENGTH,
        "description": "Default: the server's NGAI_DEFAULT_MODEL.",
    },
    "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
    "stream": {"description": "Ignored: answers always stream."},
}

_CHAT_ID = {
    "name": "chatId",
    "in": "path",
    "required": True,
    "description": "The chat's id (useChat's id): 1-128 of A-Z, a-z, 0-9, _ and -.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
}

_SESSION_ID = {
    "name": "sessionId",
    "in": "path",
    "required": True,
    "description": "The id returned by POST /prepare.",
    "schema": {"type": "string", "format": "uuid"},
}


def error_classes() -> list[type[errors.ApiError]]:
    """Every concrete error of the tree, base first, each code once."""
    found: dict[str, type[errors.ApiError]] = {}
    pending: list[type[errors.ApiError]] = [errors.ApiError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return list(found.values())


def _models_errors() -> list[type[errors.ApiError]]:
    """What ``/models`` may answer when the upstream fails and nothing is cached:
    any upstream error but those only a stream has.
    """
    stream_only = (errors.UpstreamStreamError, errors.UpstreamInterrupted)
    return [
        cls
        for cls in error_classes()
        if issubclass(cls, errors.UpstreamError) and not issubclass(cls, stream_only)
    ]


def _errors(*classes: type[errors.ApiError]) -> dict[str, t.Any]:
    """The error responses of an operation, one per status, naming their codes."""
    by_status: dict[int, list[type[errors.ApiError]]] = {}
    every: list[type[errors.ApiError]] = [*classes, errors.InternalError]
    for cls in every:
        by_status.setdefault(cls.status, []).append(cls)
    responses: dict[str, t.Any] = {}
    for status, group in sorted(by_status.items()):
        codes = " or ".join(cls.code for cls in group)
        retry = " (Retry-After)" if any(cls.default_retry_after for cls in group) else ""
        responses[str(status)] = {
            "description": f"{codes}{retry}",
            "content": {
                "application/json": {
                    "schema": {
                        "allOf": [_ref("ErrorResponse")],
                        "properties": {
                            "error": {
                                "properties": {
                                    "code": {"enum": [cls.code for cls in group]},
                                    "status": {"const": status},
                                }
                            }
                        },
                    }
                }
            },
        }
    return responses


def _components() -> dict[str, t.Any]:
    error_object = {
        "type": "object",
        "required": ["code", "message", "status"],
        "properties": {
            "code": {"type": "string", "enum": [cls.code for cls in error_classes()]},
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
                    key: _MESSAGE_PROPERTIES.get(key, {"description": "Passed upstream."})
                    for key in sorted(MESSAGE_KEYS, key=lambda k: (k != "role", k))
                },
            },
            "ContentPart": _CONTENT_PART,
            "ToolCall": _TOOL_CALL,
            "PrepareRequest": {
                "type": "object",
                "required": ["messages"],
                "additionalProperties": False,
                "properties": {
                    **{
                        key: _OWN_PROPERTIES[key]
                        for key in sorted(OWN_KEYS, key=list(_OWN_PROPERTIES).index)
                    },
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
            "UIChatRequest": {
                "type": "object",
                "required": ["id", "messages"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["role", "parts"],
                            "properties": {
                                "id": {"type": "string"},
                                "role": {"enum": ["system", "user", "assistant"]},
                                "parts": {"type": "array", "items": {"type": "object"}},
                                "metadata": {"type": "object"},
                            },
                        },
                    },
                    "trigger": {"enum": ["submit-message", "regenerate-message"]},
                    "messageId": {"type": "string"},
                    "model": {"type": "string"},
                },
            },
            "OpenAIError": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "param", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {
                                "enum": [
                                    "invalid_request_error",
                                    "authentication_error",
                                    "permission_error",
                                    "insufficient_quota",
                                    "rate_limit_error",
                                    "api_error",
                                ]
                            },
                            "param": {"type": ["string", "null"]},
                            "code": {"type": "string"},
                        },
                    }
                },
            },
            "ChunkEvent": {
                "description": "event: chunk. The upstream chat.completion.chunk exactly as "
                "received, plus content (the text of choices[0].delta.content) and "
                "reasoning (the text of choices[0].delta.reasoning), each '' when none. "
                "Generated images (choices[0].delta.images: [{type: image_url, image_url: "
                "{url: data:image/png;base64,…}}]) come whole in their chunk, one event of "
                "several MB each (up to NGAI_MAX_EVENT_BYTES), and are replayed on resume.",
                "type": "object",
                "required": ["content", "reasoning"],
                "properties": {
                    "content": {"type": "string"},
                    "reasoning": {"type": "string"},
                    "id": {"type": "string"},
                    "model": {"type": "string"},
                    "choices": {"type": "array"},
                    "usage": {"type": "object"},
                },
            },
            "DoneEvent": {
                "description": "event: done. The last event of a finished stream.",
                "type": "object",
                "required": [
                    "finishReason",
                    "model",
                    "usage",
                    "generationId",
                    "citations",
                    "reasoningDetails",
                    "toolCalls",
                ],
                "properties": {
                    "finishReason": {
                        "type": ["string", "null"],
                        "description": "The upstream's finish reason as sent (stop, length, "
                        "tool_calls, …; null if none came), or cancelled after DELETE.",
                    },
                    "model": {
                        "type": ["string", "null"],
                        "description": "The model that answered, as the upstream reports it.",
                    },
                    "usage": {
                        "type": ["object", "null"],
                        "description": "The usage chunk's usage as sent (with cost when "
                        "reported); null if none came.",
                    },
                    "generationId": {
                        "type": ["string", "null"],
                        "description": "The chunks' id (gen-…); null if no chunk came.",
                    },
                    "citations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["url"],
                            "properties": {
                                "url": {"type": "string"},
                                "title": {"type": "string"},
                            },
                        },
                        "description": "The answer's url_citation annotations, de-duplicated "
                        "by url, in order of first appearance.",
                    },
                    "reasoningDetails": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "The answer's reasoning_details merged by index: send "
                        "them back on the assistant message of the next turn.",
                    },
                    "toolCalls": {
                        "type": "array",
                        "items": _ref("ToolCall"),
                        "description": "The answer's tool calls, assembled from the "
                        "delta.tool_calls fragments by their index; [] when none.",
                    },
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
            "Server-Sent Events: POST /prepare, then GET the streamUrl with EventSource; "
            "or POST /chat (the AI SDK's useChat), or POST /v1/chat/completions (OpenAI SDKs).",
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
                        **_errors(*PREPARE_ERRORS),
                    },
                }
            },
            stream_path: {
                "get": {
                    "summary": "Stream the answer as Server-Sent Events",
                    "description": "Events: chunk (ChunkEvent), then exactly one done "
                    "(DoneEvent) or error (ErrorEvent); every event has an id. Resume with "
                    "the Last-Event-ID header or ?lastEventId=N (ASCII digits; anything "
                    "else counts as 0). Errors, an unknown session included, arrive as an "
                    "error event in a 200 stream.",
                    "parameters": [
                        _SESSION_ID,
                        {
                            "name": "lastEventId",
                            "in": "query",
                            "required": False,
                            "description": "ASCII digits, at most 11; anything else is 0.",
                            "schema": {"type": "string"},
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
                        **_errors(*CANCEL_ERRORS),
                    },
                },
            },
            f"{prefix}/chat": {
                "post": {
                    "summary": "Answer as the AI SDK's UI message stream (useChat)",
                    "description": "DefaultChatTransport's body: {id, messages: UIMessage[], "
                    "trigger, messageId?}, plus an optional model and any pass-through key "
                    "of /prepare. The answer streams at once as the UI message stream "
                    "(x-vercel-ai-ui-message-stream: v1): start, start-step, reasoning-*, "
                    "text-*, source-url, tool-input-*, file, finish-step, finish (or error, "
                    "abort), then data: [DONE]. Refusals before the stream starts are JSON "
                    "errors.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("UIChatRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "text/event-stream: the UI message stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(*PREPARE_ERRORS),
                    },
                }
            },
            f"{prefix}/chat/{{chatId}}/stream": {
                "get": {
                    "summary": "Resume the chat's running answer (replayed from start)",
                    "parameters": [_CHAT_ID],
                    "responses": {
                        "200": {
                            "description": "text/event-stream: the whole message, then live",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "204": {"description": "None of the chat's answers is running."},
                        **_errors(errors.Unauthorized),
                    },
                },
                "delete": {
                    "summary": "Stop the chat's running answer",
                    "parameters": [_CHAT_ID],
                    "responses": {
                        "204": {"description": "Stopped, or nothing was running."},
                        **_errors(errors.Unauthorized),
                    },
                },
            },
            f"{prefix}/v1/chat/completions": {
                "post": {
                    "summary": "OpenAI-compatible chat completion (streamed or not)",
                    "description": "OpenAI's chat completion request (model, messages, "
                    "stream, stream_options, n = 1, and /prepare's pass-through keys). "
                    "stream: true answers text/event-stream with each upstream chunk as "
                    "data: <chunk>, then data: [DONE]; otherwise one chat.completion. "
                    "Errors carry OpenAI's body {error: {message, type, param, code}} with "
                    "the status of the same code elsewhere.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "a chat.completion, or text/event-stream of chunks",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "default": {
                            "description": "An error, in OpenAI's shape",
                            "content": {"application/json": {"schema": _ref("OpenAIError")}},
                        },
                    },
                }
            },
            f"{prefix}/v1/models": {
                "get": {
                    "summary": "The allowed models, in OpenAI's list shape",
                    "responses": {
                        "200": {
                            "description": '{"object": "list", "data": [{id, object, created, '
                            "owned_by}]}",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "default": {
                            "description": "An error, in OpenAI's shape",
                            "content": {"application/json": {"schema": _ref("OpenAIError")}},
                        },
                    },
                }
            },
            f"{prefix}/models": {
                "get": {
                    "summary": "The upstream's model list (cached)",
                    "parameters": [
                        {
                            "name": "free",
                            "in": "query",
                            "required": False,
                            "description": "Keep only models whose prompt and completion "
                            "prices are both zero (any case; other values: all models).",
                            "schema": {"type": "string", "enum": list(FREE_VALUES)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": '{"data": [...]}; header Warning: 110 when stale',
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(*_models_errors()),
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
                        **_errors(*METRICS_ERRORS),
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
