"""The application factory for running ngai_chat on its own."""

from __future__ import annotations

import time
import typing as t

import flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import load_settings
from .doors import chat_blueprint
from .doors import http_error_response
from .doors import internal_error_response
from .doors.base import apply_cors
from .log import configure_logging
from .services import init_app
from .store import Store
from .upstream import Upstream

__all__ = ["create_app"]


def create_app(
    test_config: t.Mapping[str, t.Any] | None = None,
    *,
    store: Store | None = None,
    upstream: Upstream | None = None,
    clock: t.Callable[[], float] = time.time,
) -> flask.Flask:
    """Create the standalone app: the chat endpoints mounted at ``/``.

    :param test_config: settings that take precedence over the environment and
        ``.env`` (same names, e.g. ``{"NGAI_DEMO": "1"}``).
    :param store: a store to use instead of the one ``REDIS_URL`` selects.
    :param upstream: an upstream to use instead of OpenRouter or the demo.
    :param clock: wall-clock source for session deadlines.
    :raises ConfigError: a setting is missing or malformed.
    """
    app = flask.Flask(__name__, static_folder=None)
    app.config.from_mapping(test_config or {})
    settings = load_settings(app.config)
    # our own server: its logging is ours to set up (a mounted blueprint's is the host's)
    configure_logging([settings.api_key], settings.log_format)
    init_app(app, settings=settings, store=store, upstream=upstream, clock=clock, standalone=True)
    app.register_blueprint(chat_blueprint)
    # Routing errors never reach a blueprint's handlers; answer them in JSON too.
    app.register_error_handler(HTTPException, http_error_response)
    app.register_error_handler(Exception, internal_error_response)
    # ... and give them the CORS headers too: the whole app is ours
    app.after_request(apply_cors)
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)  # type: ignore[method-assign]
    return app
