"""Where answers come from: OpenRouter (or any OpenAI-compatible server), or the demo.

The relay sees only the :class:`Upstream` interface, so tests and the demo hand in
their own implementation the way httpx takes a transport.
"""

from __future__ import annotations

import typing as t

from ..chunks import Chunk as Chunk

__all__ = ["Chunk", "ChunkStream", "Upstream"]


class ChunkStream(t.Protocol):
    """The parsed data chunks of one streamed completion.

    Iterating yields each ``data:`` JSON object as a :class:`Chunk` and stops at
    ``[DONE]``. Failures surface as :class:`~ngai_chat.errors.UpstreamError`,
    during iteration as well: :class:`~ngai_chat.errors.UpstreamInterrupted` when
    the body ends without ``[DONE]``, :class:`~ngai_chat.errors.UpstreamTimeout`
    when the upstream stays silent past the read timeout.
    """

    def __iter__(self) -> t.Iterator[Chunk]: ...

    def close(self) -> None:
        """Close the connection; safe to call twice and from another greenlet."""


class Upstream(t.Protocol):
    """A chat-completions server."""

    #: ``"openrouter"`` or ``"demo"``, as reported by ``/health``
    name: str

    def stream_chat(self, body: dict[str, t.Any], *, referer: str | None) -> ChunkStream:
        """Start one streamed completion.

        :param body: the chat-completions body; ``stream`` is set by the client.
        :param referer: sent as ``HTTP-Referer`` when given.
        :raises UpstreamError: the upstream refused or could not be reached.
        """

    def list_models(self) -> dict[str, t.Any]:
        """The model list, ``{"data": [...]}``.

        :raises UpstreamError: the upstream failed.
        """

    def close(self) -> None:
        """Release pooled connections."""
