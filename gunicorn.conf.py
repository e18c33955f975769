"""gunicorn configuration: everything lives in :mod:`ngai_chat.gunicorn_conf`."""

from __future__ import annotations

from ngai_chat.gunicorn_conf import *  # noqa: F403
