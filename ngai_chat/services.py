"""The services one app's chat endpoints use, built once per app from its settings.

They live in ``app.extensions["ngai_chat"]`` and are read through
:func:`get_services`, so that one process can host several apps (tests do) and a
host app mounting the blueprint needs nothing more than registering it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t

import flask
from flask import current_app

from . import __version__
from .budget import Budgets
from .budget import budgets_from_settings
from .catalog import ModelsCache
from .config import Settings
from .config import load_settings
from .guards import RateLimiter
from .guards import rate_limiter_for
from .log import configure_logging
from .log import give_startup_notices
from .metrics import Metrics
from .relay import Relay
from .store import Store
from .store import store_from_url
from .sweeper import Sweeper
from .upstream import Upstream

__all__ = ["EXTENSION", "Services", "get_services", "init_app"]

log = logging.getLogger(__name__)

#: the key in ``app.extensions``
EXTENSION = "ngai_chat"


@dataclasses.dataclass
class Services:
    """Everything one app's chat endpoints use."""

    settings: Settings
    store: Store
    upstream: Upstream
    relay: Relay
    sweeper: Sweeper
    models: ModelsCache
    metrics: Metrics
    #: ``None`` when ``NGAI_RATE_LIMIT`` is unset
    rate_limiter: RateLimiter | None = None
    #: ``None`` when neither ``NGAI_BUDGET_PER_CLIENT`` nor ``NGAI_BUDGET_TOTAL`` is set
    budgets: Budgets | None = None
    #: wall-clock source for session deadlines
    clock: t.Callable[[], float] = time.time


def get_services() -> Services:
    """The services of the current app."""
    return t.cast(Services, current_app.extensions[EXTENSION])


def init_app(
    app: flask.Flask,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
    upstream: Upstream | None = None,
    clock: t.Callable[[], float] = time.time,
    standalone: bool = False,
) -> Services:
    """Build the app's services from its settings (once per app).

    :param settings: defaults to :func:`~ngai_chat.config.load_settings` over
        ``app.config``, the environment and ``.env``.
    :param store: defaults to the store for ``REDIS_URL``.
    :param upstream: defaults to OpenRouter, or the demo model with ``NGAI_DEMO=1``.
    :param standalone: the app is :func:`~ngai_chat.create_app`'s, whose server
        checks the worker count; a mounted one is warned about the memory store.
    :raises ConfigError: a setting is missing or malformed.
    """
    if EXTENSION in app.extensions:
        return t.cast(Services, app.extensions[EXTENSION])
    settings = settings or load_settings(app.config)
    configure_logging([settings.api_key], settings.log_format)
    if store is None:
        if not standalone and settings.store_kind == "memory":
            # nothing stops the host app's server from running several workers
            log.warning(
                "no REDIS_URL: sessions live in this process's memory, which suits one "
                "worker process only; with several workers or instances, set REDIS_URL "
                "(e.g. redis://localhost:6379/0) so that they share sessions."
            )
        store = store_from_url(
            settings.redis_url,
            replay_ttl=settings.replay_ttl,
            clock=clock,
            max_replay_bytes=settings.max_replay_bytes,
            key_prefix=settings.redis_key_prefix,
            heartbeat=settings.heartbeat_interval,
            max_events=settings.max_events,
        )
    if upstream is None:
        upstream = _default_upstream(settings)
    metrics = Metrics(
        enabled=settings.metrics,
        provider=upstream.name,
        info={"version": __version__, "store": store.kind, "upstream": upstream.name},
    )
    metrics.live_sessions = lambda: store.count_live()
    budgets = budgets_from_settings(
        settings.budget_per_client,
        settings.budget_total,
        redis_url=settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        clock=clock,
    )
    if budgets is not None:
        metrics.on_finished(budgets.record)
    services = Services(
        settings=settings,
        store=store,
        upstream=upstream,
        relay=Relay(
            store,
            upstream,
            heartbeat=settings.heartbeat_interval,
            abandon_timeout=settings.abandon_timeout,
            max_events=settings.max_events,
            max_log_bytes=settings.max_log_bytes,
            metrics=metrics,
        ),
        sweeper=Sweeper(store, settings.sweep_interval, clock=clock),
        models=ModelsCache(upstream, settings.models_cache_ttl),
        metrics=metrics,
        rate_limiter=rate_limiter_for(settings, store.kind),
        budgets=budgets,
        clock=clock,
    )
    relay = services.relay
    metrics.running = lambda: len(relay.running)
    app.extensions[EXTENSION] = services
    give_startup_notices(settings, log)
    return services


def _default_upstream(settings: Settings) -> Upstream:
    if settings.demo:
        from .upstream.demo import DemoUpstream

        return DemoUpstream()
    from .upstream.openrouter import OpenRouterUpstream

    return OpenRouterUpstream(
        api_key=settings.api_key,
        base_url=settings.base_url,
        title=settings.title,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        pool_size=min(settings.max_streams, 1000),
        max_event_bytes=settings.max_event_bytes,
    )
