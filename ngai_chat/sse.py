"""Pure Server-Sent Events framing (https://html.spec.whatwg.org/#server-sent-events).

Every function returns the exact bytes of one frame. Line breaks inside ``data``
become several ``data:`` lines (the browser joins them back with ``\\n``); line
breaks in ``id`` and ``event`` would break the framing, so they are removed.
"""

from __future__ import annotations

import re

__all__ = ["comment", "event", "retry"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def event(data: str, *, name: str | None = None, id: int | str | None = None) -> bytes:
    """One event frame.

    :param data: the payload; may contain line breaks.
    :param name: the ``event:`` field (``message`` when omitted).
    :param id: the ``id:`` field, stored by the browser as ``Last-Event-ID``.
    """
    lines = []
    if id is not None:
        lines.append(f"id: {_one_line(str(id))}")
    if name is not None:
        lines.append(f"event: {_one_line(name)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def comment(text: str = "") -> bytes:
    """A comment frame: ignored by clients, keeps proxies and the client awake."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def _one_line(value: str) -> str:
    return _LINE_BREAK.sub("", value)
