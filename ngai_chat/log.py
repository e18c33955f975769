"""Logging, with the API key scrubbed from every line and the password of every URL
shown redacted (:func:`redact_url`).

Two modes, as a library should: for a server we run ourselves (``create_app``,
gunicorn) :func:`configure_logging` sets up handlers and formats; a blueprint mounted
in a host app sets up nothing, and only takes the key out of the records of the
``ngai_chat`` loggers when they are made (:func:`redact_key_in_our_records`), so that
the host's handlers get them clean.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import sys
import typing as t

from .config import DEMO_MODEL

if t.TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "emit",
    "give_startup_notices",
    "redact_key_in_our_records",
    "redact_url",
    "redact_urls",
    "startup_notices",
]

#: what a secret is replaced with, in log lines and in what clients see
REDACTED = "[redacted]"

DEMO_NOTICE = (
    f"demo mode: no upstream is called; the offline model '{DEMO_MODEL}' answers every "
    "request. Set OPENROUTER_API_KEY (environment or .env) to relay real models."
)
OPEN_RELAY_WARNING = (
    "open relay: anyone who can reach this server can use it, on your OPENROUTER_API_KEY, "
    "with any model and as often as they like; set NGAI_API_TOKENS (bearer tokens), "
    "NGAI_MODEL_ALLOWLIST (e.g. *:free) or NGAI_RATE_LIMIT (e.g. 20/minute) to close it."
)

#: a URL in free text: a scheme, ``://``, then up to a space or a quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")


def redact_url(url: str) -> str:
    """``url`` with its password replaced (``redis://user:[redacted]@host:6379/0``):
    how every error and log line shows a URL.

    The user information is everything before the last ``@`` of what follows
    ``://``, so that a password holding ``/`` or ``@`` is hidden whole (a path with
    an ``@`` is then hidden too, which is the safe side).
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user + ':' if colon else ''}{REDACTED}@{location}"


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it redacted (:func:`redact_url`)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


#: set by gunicorn's master once it has given the startup notices; the workers it
#: forks inherit it, so that they do not say the same things again
notices_given_by_master = False


def startup_notices(settings: Settings) -> list[tuple[int, str]]:
    """What starting with ``settings`` tells the operator, in order, as
    ``(logging level, message)``: demo mode or where answers come from, then the
    open-relay warning (SPEC §5 invariant 9).
    """
    notices: list[tuple[int, str]] = []
    if settings.demo:
        notices.append((logging.WARNING, DEMO_NOTICE))
    else:
        notices.append(
            (
                logging.INFO,
                f"relaying to {redact_url(settings.base_url)} (store: {settings.store_kind})",
            )
        )
    if settings.open_relay:
        notices.append((logging.WARNING, OPEN_RELAY_WARNING))
    return notices


def give_startup_notices(settings: Settings, logger: logging.Logger) -> None:
    """Log :func:`startup_notices` unless gunicorn's master already gave them.

    :param logger: where they go (gunicorn's error log in the master).
    """
    if notices_given_by_master:
        return
    for level, message in startup_notices(settings):
        logger.log(level, message)


def _redact(record: logging.LogRecord, secrets: t.Iterable[str]) -> None:
    """Replace ``secrets`` in ``record``'s final message and traceback."""
    message = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    changed = False
    for secret in secrets:
        if secret in message:
            message = message.replace(secret, REDACTED)
            changed = True
        if record.exc_text and secret in record.exc_text:
            record.exc_text = record.exc_text.replace(secret, REDACTED)
    if changed:
        record.msg, record.args = message, None


class RedactingFilter(logging.Filter):
    """Replaces secrets in a record's final message, whatever put them there (on the
    handlers of a server we run ourselves: :func:`configure_logging`).

    :param secrets: strings that must never reach a log line.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            _redact(record, self.secrets)
        return True


#: what is taken out of every record of the ``ngai_chat`` loggers when it is made
_our_secrets: set[str] = set()
_factory_installed = False


def _ours(name: str) -> bool:
    return name == "ngai_chat" or name.startswith("ngai_chat.")


def redact_key_in_our_records(secrets: list[str]) -> None:
    """Take ``secrets`` out of every record an ``ngai_chat`` logger makes, at the
    moment it is made, so that they are gone whatever handler (the host app's, ours,
    pytest's) then sees the record. Nothing else about logging is changed: a mounted
    blueprint adds no handler, sets no level and leaves propagation alone, as a
    library should. Records of other loggers pass untouched. Safe to call again
    (every app's secrets are added).
    """
    global _factory_installed
    _our_secrets.update(s for s in secrets if s)
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def make_record(*args: t.Any, **kwargs: t.Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _our_secrets and _ours(record.name):
            # a bad format string is the handler's to report, as it would be without us
            with contextlib.suppress(Exception):
                _redact(record, _our_secrets)
        return record

    logging.setLogRecordFactory(make_record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, ``pid``
    (and ``exception`` with the traceback when there is one).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, t.Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
TEXT_DATEFMT = "%Y-%m-%d %H:%M:%S %z"


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``NGAI_LOG_FORMAT`` (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT, TEXT_DATEFMT)


def emit(message: str, *, level: str = "info", log_format: str | None = None) -> None:
    """Print one startup line to stderr before logging is set up (gunicorn's
    master), as JSON when ``NGAI_LOG_FORMAT=json``.
    """
    log_format = log_format or os.environ.get("NGAI_LOG_FORMAT", "text").strip().lower()
    if log_format == "json":
        record = logging.LogRecord("ngai_chat", logging.INFO, "", 0, message, None, None)
        record.levelname = level.upper()
        line = JsonFormatter().format(record)
    else:
        line = f"ngai_chat: {message}"
    print(line, file=sys.stderr, flush=True)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (as ``logging.lastResort``)."""

    @property
    def stream(self) -> t.TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: t.TextIO) -> None:
        pass


def configure_logging(
    secrets: list[str], log_format: str = "text", level: int = logging.INFO
) -> None:
    """Send ``ngai_chat`` logs to stderr, and scrub ``secrets`` from every handler
    of the ``ngai_chat``, root and ``gunicorn`` loggers: for a server we run
    ourselves (:func:`~ngai_chat.create_app`, gunicorn), never for a mounted
    blueprint, whose host's logging is its own. Safe to call again.

    :param log_format: ``text``, or ``json`` for one JSON object per line.
    """
    logger = logging.getLogger("ngai_chat")
    handler = next((h for h in logger.handlers if getattr(h, "_ngai_chat", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler._ngai_chat = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    handler.setFormatter(make_formatter(log_format))
    for name in ("ngai_chat", "", "gunicorn.error", "gunicorn.access"):
        for each in logging.getLogger(name).handlers:
            existing = [f for f in each.filters if isinstance(f, RedactingFilter)]
            if existing:
                existing[0].secrets = sorted({*existing[0].secrets, *secrets} - {""})
            else:
                each.addFilter(RedactingFilter(secrets))
