"""What is not a door: the chat page, ``/models``, ``/health``, ``/openapi.json``
and ``/metrics`` (SPEC §3).
"""

from __future__ import annotations

import typing as t

import flask
from flask import request

from .. import errors
from .._version import __version__
from ..catalog import filter_models
from ..catalog import wants_free
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..openapi import openapi_document
from ..services import get_services
from .base import chat_blueprint as bp
from .base import mount_prefix

__all__ = ["health", "index", "metrics", "models", "openapi"]


@bp.get("/")
def index() -> str:
    services = get_services()
    return flask.render_template(
        "ngai_chat/index.html",
        api_base=mount_prefix(),
        demo=services.settings.demo,
        default_model=services.settings.effective_default_model,
        version=__version__,
    )


@bp.get("/models")
def models() -> flask.Response:
    services = get_services()
    data, stale = services.models.get()
    free_only = wants_free(request.args.get("free"))
    response = flask.jsonify(
        filter_models(data, allowlist=services.settings.effective_allowlist, free_only=free_only)
    )
    if stale:
        response.headers["Warning"] = "110 - stale"
    return response


@bp.get("/health")
def health() -> flask.Response:
    services = get_services()
    body: dict[str, t.Any] = {
        "status": "ok",
        "upstream": services.upstream.name,
        "store": services.store.kind,
        "sessions": 0,
        "streams": services.relay.open_streams,
        "version": __version__,
    }
    try:
        services.store.ping()
        body["sessions"] = services.store.count_live()
    except errors.StoreUnavailable as exc:
        body.update(status="degraded", error=exc.to_dict())
        response = flask.jsonify(body)
        response.status_code = 503
        return response
    return flask.jsonify(body)


@bp.get("/openapi.json")
def openapi() -> flask.Response:
    return flask.jsonify(openapi_document(mount_prefix()))


@bp.get("/metrics")
def metrics() -> flask.Response:
    services = get_services()
    if not services.settings.metrics:
        raise errors.NotFound("Metrics are off; set NGAI_METRICS=1 to serve them here.")
    return flask.Response(services.metrics.render(), content_type=METRICS_CONTENT_TYPE)
