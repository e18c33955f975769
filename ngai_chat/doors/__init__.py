"""The HTTP surface (SPEC §3): ``chat_blueprint`` and its front doors.

One answer, one generation, one event log, read through three front doors (DESIGN.md
"Three front doors, one log"). Each door is a module here holding its views, over the
same relay, guards and store; what it writes comes from a pure encoder. The
blueprint's set-up, its error handling and the steps every door shares are in
:mod:`.base`.

- :mod:`.ngai`: the NGAI protocol, ``POST /prepare`` and ``GET``/``DELETE /stream/<id>``
- :mod:`.ui_chat`: the AI SDK door, ``POST /chat`` and ``GET``/``DELETE /chat/<id>/stream``
- :mod:`.openai`: OpenAI-compatible, ``POST /v1/chat/completions`` and ``GET /v1/models``
- :mod:`.site`: the chat page, ``/models``, ``/health``, ``/openapi.json``, ``/metrics``

Importing this package registers every route on :data:`chat_blueprint`.
"""

from __future__ import annotations

from . import ngai as ngai
from . import openai as openai
from . import site as site
from . import ui_chat as ui_chat
from .base import chat_blueprint as chat_blueprint
from .base import error_response as error_response
from .base import http_error_response as http_error_response
from .base import internal_error_response as internal_error_response

__all__ = ["chat_blueprint", "error_response", "http_error_response", "internal_error_response"]
