"""Pure Server-Sent Events framing (https://html.spec.whatwg.org/#server-sent-events).

Every function returns the exact bytes of one frame. Line breaks inside ``data``
become several ``data:`` lines (the browser joins them back with ``\\n``); line
breaks in ``id`` and ``event`` would break the framing, so they are removed.
"""

from __future__ import annotations

import json
import re
import typing as t

import orjson

__all__ = ["comment", "event", "json_data", "retry"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: a UTF-16 surrogate: a JSON ``"\ud83d"`` escape decodes to one, alone when a
#: provider splits an emoji's surrogate pair across chunks
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_data(value: t.Any) -> str:
    """Compact JSON for a ``data:`` line, that always encodes as UTF-8.

    Non-ASCII text stays as it is, except that a lone surrogate, which UTF-8
    cannot carry, makes the whole value use ``\\u`` escapes (as the upstream
    sent it).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate, or an integer wider than 64 bits
        pass
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if _SURROGATE.search(text):
        return json.dumps(value, separators=(",", ":"))
    return text


def event(data: str, *, name: str | None = None, id: int | str | None = None) -> bytes:
    """One event frame.

    :param data: the payload; may contain line breaks.
    :param name: the ``event:`` field (``message`` when omitted).
    :param id: the ``id:`` field, stored by the browser as ``Last-Event-ID``.

    A lone surrogate, which UTF-8 cannot carry, goes out as its ``\\u`` escape
    (in JSON data, the escape the upstream sent).
    """
    if "\n" in data or "\r" in data:
        body = "\n".join(f"data: {line}" for line in _LINE_BREAK.split(data))
    else:  # the usual case: one line of JSON
        body = f"data: {data}"
    if name is not None:
        body = f"event: {_one_line(name)}\n{body}"
    if id is not None:
        body = f"id: {_one_line(str(id))}\n{body}"
    return f"{body}\n\n".encode("utf-8", "backslashreplace")


def comment(text: str = "") -> bytes:
    """A comment frame: ignored by clients, keeps proxies and the client awake."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def _one_line(value: str) -> str:
    return _LINE_BREAK.sub("", value) if "\n" in value or "\r" in value else value
