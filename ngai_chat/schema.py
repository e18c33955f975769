"""Validate a ``POST /prepare`` body into a :class:`ChatRequest` (SPEC §3).

Errors name the offending field with a path (``messages[2].role``), so a client
developer sees at once what to change.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import math
import re
import typing as t

from .errors import InvalidJson
from .errors import InvalidRequest

__all__ = [
    "IMAGE_TYPES",
    "PART_TYPES",
    "PASSTHROUGH",
    "ROLES",
    "ChatRequest",
    "parse_json",
    "validate",
]

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_details"}
)
MAX_MODEL_LENGTH = 200


def _number(value: t.Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: t.Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_or_strings(value: t.Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    )


#: parameters passed upstream unchanged → (type check, expected form for the error)
PASSTHROUGH: dict[str, tuple[t.Callable[[t.Any], bool], str]] = {
    "temperature": (_number, "a number"),
    "top_p": (_number, "a number"),
    "top_k": (_integer, "a whole number"),
    "min_p": (_number, "a number"),
    "top_a": (_number, "a number"),
    "max_tokens": (_integer, "a whole number"),
    "stop": (_string_or_strings, "a string or a list of strings"),
    "seed": (_integer, "a whole number"),
    "frequency_penalty": (_number, "a number"),
    "presence_penalty": (_number, "a number"),
    "repetition_penalty": (_number, "a number"),
    "logit_bias": (lambda v: isinstance(v, dict), "an object"),
    "logprobs": (lambda v: isinstance(v, bool), "true or false"),
    "top_logprobs": (_integer, "a whole number"),
    "response_format": (lambda v: isinstance(v, dict), "an object"),
    "tools": (lambda v: isinstance(v, list), "a list"),
    "tool_choice": (lambda v: isinstance(v, str | dict), "a string or an object"),
    "reasoning": (lambda v: isinstance(v, dict), "an object"),
    "provider": (lambda v: isinstance(v, dict), "an object"),
    "models": (
        lambda v: isinstance(v, list) and all(isinstance(m, str) and m for m in v),
        "a list of model ids",
    ),
    "transforms": (
        lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v),
        "a list of strings",
    ),
    "user": (lambda v: isinstance(v, str), "a string"),
    "plugins": (lambda v: isinstance(v, list), "a list"),
    "session_id": (lambda v: isinstance(v, str), "a string"),
    "parallel_tool_calls": (lambda v: isinstance(v, bool), "true or false"),
    "modalities": (
        lambda v: isinstance(v, list) and all(isinstance(m, str) for m in v),
        'a list of strings such as ["image", "text"]',
    ),
    "image_config": (lambda v: isinstance(v, dict), "an object"),
    "max_completion_tokens": (_integer, "a whole number"),
}
#: keys accepted besides the pass-through ones (``stream`` is ignored: always true)
OWN_KEYS = frozenset({"model", "messages", "stream"})


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, ready to go upstream."""

    #: the model named by the client, or ``None`` for the server's default
    model: str | None
    messages: list[dict[str, t.Any]]
    #: the pass-through parameters the client sent
    params: dict[str, t.Any]


def parse_json(body: bytes) -> t.Any:
    """Decode a UTF-8 JSON body.

    :raises InvalidJson: not UTF-8, not JSON, or with ``NaN``/``Infinity``.
    :raises InvalidRequest: a number too large to be finite (``1e999``), with
        ``field`` naming where it is.
    """

    def reject_constant(name: str) -> t.NoReturn:
        raise ValueError(f"{name} is not valid JSON")

    non_finite = False

    def parse_float(text: str) -> float:
        nonlocal non_finite
        value = float(text)
        if not math.isfinite(value):
            non_finite = True
        return value

    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=reject_constant, parse_float=parse_float
        )
    except UnicodeDecodeError:
        raise InvalidJson("The request body is not valid UTF-8 text; send UTF-8 JSON.") from None
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        position = (
            f" at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise InvalidJson(
            f"The request body is not valid JSON ({detail}{position}). "
            'Send an object such as {"messages": [{"role": "user", "content": "Hi"}]}.'
        ) from None
    if non_finite:  # rare: only then walk the whole body to name the field
        path = _non_finite_path(value)
        raise InvalidRequest(
            f"{path} is a number too large to represent (such as 1e999); send a finite number.",
            field=path,
        )
    return value


def _non_finite_path(value: t.Any) -> str:
    """The path (``logit_bias.1``, ``messages[0].content``) of the first
    non-finite float in ``value``; walked with a stack, not recursion, since a
    body may nest as deep as the JSON parser allows.
    """
    stack: list[tuple[str, t.Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "body"
        if isinstance(item, dict):
            children = [(path + _key_part(key, bool(path)), v) for key, v in item.items()]
        elif isinstance(item, list):
            children = [(f"{path}[{index}]", v) for index, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))  # depth first, in document order
    return "body"


def _key_part(key: str, nested: bool) -> str:
    if key.isascii() and (key.isalnum() or key.replace("_", "").isalnum()):
        return f".{key}" if nested else key
    return f"[{json.dumps(key, ensure_ascii=False)}]"


def validate(body: t.Any) -> ChatRequest:
    """Check the shape of a ``/prepare`` body.

    :raises InvalidRequest: with ``field`` naming the first offending field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(
            f'The body must be a JSON object such as {{"messages": [...]}}, not {_kind(body)}.',
            field="body",
        )
    for key in body:
        if key not in OWN_KEYS and key not in PASSTHROUGH:
            raise InvalidRequest(
                f"Unknown field '{key}'. Allowed: model, messages, and "
                + ", ".join(sorted(PASSTHROUGH))
                + ".",
                field=key,
            )
    model = body.get("model")
    if model is not None and (
        not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_LENGTH
    ):
        raise InvalidRequest(
            f"'model' must be a non-empty model id string (at most {MAX_MODEL_LENGTH} "
            'characters) such as "mistralai/mistral-7b-instruct:free", or left out.',
            field="model",
        )
    if "messages" not in body:
        raise InvalidRequest(
            "'messages' is required: a non-empty list such as "
            '[{"role": "user", "content": "Hello"}].',
            field="messages",
        )
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' must be a non-empty list of {role, content} objects.",
            field="messages",
        )
    checked = [_message(item, f"messages[{index}]") for index, item in enumerate(messages)]
    params = {}
    for key, (check, expected) in PASSTHROUGH.items():
        if key in body:
            value = body[key]
            if not check(value) or (isinstance(value, float) and not math.isfinite(value)):
                raise InvalidRequest(f"'{key}' must be {expected}.", field=key)
            params[key] = value
    return ChatRequest(model=model, messages=checked, params=params)


def _message(item: t.Any, path: str) -> dict[str, t.Any]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{path} must be an object with 'role' and 'content'.", field=path)
    for key in item:
        if key not in MESSAGE_KEYS:
            raise InvalidRequest(
                f"{path} has an unknown field '{key}'. Allowed: "
                + ", ".join(sorted(MESSAGE_KEYS))
                + ".",
                field=f"{path}.{key}",
            )
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(
            f"{path}.role must be one of {', '.join(ROLES)}; got {_show(role)}.",
            field=f"{path}.role",
        )
    content = item.get("content")
    if content is None and not (role == "assistant" and item.get("tool_calls")):
        raise InvalidRequest(
            f"{path}.content is required: a string or a list of content parts.",
            field=f"{path}.content",
        )
    if isinstance(content, list):
        for index, part in enumerate(content):
            _part(part, f"{path}.content[{index}]")
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest(
            f"{path}.content must be a string or a list of content parts; got {_kind(content)}.",
            field=f"{path}.content",
        )
    if "reasoning_details" in item and role != "assistant":
        raise InvalidRequest(
            f"{path}.reasoning_details is only accepted on assistant messages "
            "(send back the reasoningDetails of the answer it came with).",
            field=f"{path}.reasoning_details",
        )
    for key, kind, expected in (
        ("name", str, "a string"),
        ("tool_call_id", str, "a string"),
        ("tool_calls", list, "a list"),
        ("reasoning_details", list, "a list"),
    ):
        if key in item and not isinstance(item[key], kind):
            raise InvalidRequest(f"{path}.{key} must be {expected}.", field=f"{path}.{key}")
    return item


# --- content parts (SPEC §3) ----------------------------------------------------

PART_TYPES = ("text", "image_url", "file", "input_audio")
IMAGE_TYPES = ("png", "jpeg", "webp", "gif")
_IMAGE_DATA_URL = re.compile(rf"data:image/({'|'.join(IMAGE_TYPES)});base64,", re.IGNORECASE)
_PDF_DATA_URL = re.compile(r"data:application/pdf;base64,", re.IGNORECASE)
_DETAILS = ("auto", "low", "high")


def _part(part: t.Any, path: str) -> None:
    """Check one content part: text, an image, a PDF or audio.

    :raises InvalidRequest: naming the part's offending field.
    """
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidRequest(
            f"{path} must be a content part object with a 'type', such as "
            '{"type": "text", "text": "Hello"}.',
            field=path,
        )
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{path}.text must be a string.", field=f"{path}.text")
    elif kind == "image_url":
        image = _object(part, "image_url", path, '{"url": "https://…"}')
        url = image.get("url")
        field = f"{path}.image_url.url"
        if not isinstance(url, str) or not (_https(url) or _data_url(url, _IMAGE_DATA_URL, field)):
            raise InvalidRequest(
                f"{field} must be an https:// URL or a data URL of an image "
                f"(data:image/{'|'.join(IMAGE_TYPES)};base64,…); got {_url_start(url)}.",
                field=field,
            )
        if "detail" in image and image["detail"] not in _DETAILS:
            raise InvalidRequest(
                f"{path}.image_url.detail must be one of {', '.join(_DETAILS)}.",
                field=f"{path}.image_url.detail",
            )
    elif kind == "file":
        file = _object(part, "file", path, '{"filename": "a.pdf", "file_data": "data:…"}')
        if not isinstance(file.get("filename"), str) or not file["filename"]:
            raise InvalidRequest(
                f"{path}.file.filename must be the file's name (a non-empty string).",
                field=f"{path}.file.filename",
            )
        data = file.get("file_data")
        field = f"{path}.file.file_data"
        if not isinstance(data, str) or not (_https(data) or _data_url(data, _PDF_DATA_URL, field)):
            raise InvalidRequest(
                f"{field} must be an https:// URL or a data URL of a PDF "
                f"(data:application/pdf;base64,…); got {_url_start(data)}.",
                field=field,
            )
    elif kind == "input_audio":
        audio = _object(part, "input_audio", path, '{"data": "<base64>", "format": "wav"}')
        data = audio.get("data")
        field = f"{path}.input_audio.data"
        if not isinstance(data, str) or not data or not _base64(data):
            raise InvalidRequest(
                f"{field} must be the audio's bytes in base64 (no data: prefix).", field=field
            )
        if not isinstance(audio.get("format"), str) or not audio["format"]:
            raise InvalidRequest(
                f"{path}.input_audio.format must name the audio's format, such as wav or mp3.",
                field=f"{path}.input_audio.format",
            )
    else:
        raise InvalidRequest(
            f"{path}.type {_show(kind)} is not a content part type this server takes; use one "
            f"of {', '.join(PART_TYPES)}.",
            field=f"{path}.type",
        )


def _object(part: dict[str, t.Any], key: str, path: str, example: str) -> dict[str, t.Any]:
    inner = part.get(key)
    if not isinstance(inner, dict):
        raise InvalidRequest(
            f"{path}.{key} must be an object such as {example}.", field=f"{path}.{key}"
        )
    return inner


def _https(url: str) -> bool:
    return url.startswith("https://") and len(url) > len("https://")


def _data_url(url: str, prefix: re.Pattern[str], field: str) -> bool:
    """Whether ``url`` is a data URL of an accepted media type; one whose base64
    does not decode is a 400 of its own.
    """
    match = prefix.match(url)
    if match is None:
        return False
    if not _base64(url, match.end()):
        raise InvalidRequest(
            f"{field} is a data URL whose base64 does not decode; send the file's bytes "
            "encoded with standard base64 (letters, digits, + and /, padded with =).",
            field=field,
        )
    return True


def _base64(text: str, start: int = 0) -> bool:
    """Whether ``text[start:]`` is non-empty standard base64 that decodes.

    binascii in strict mode does it in C, in one pass: a 10 MB attachment takes
    milliseconds, and what it decodes to is dropped at once.
    """
    if len(text) <= start or not text.isascii():
        return False
    try:
        binascii.a2b_base64(text[start:] if start else text, strict_mode=True)
    except binascii.Error:
        return False
    return True


def _url_start(value: t.Any) -> str:
    if not isinstance(value, str):
        return _kind(value)
    return repr(value[:40] + ("…" if len(value) > 40 else ""))


def _kind(value: t.Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if _number(value) else type(value).__name__)


def _show(value: t.Any) -> str:
    return repr(value) if isinstance(value, str) else _kind(value)
