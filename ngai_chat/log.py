"""Logging for the service, with the API key scrubbed from every line."""

from __future__ import annotations

import logging
import sys
import typing as t

__all__ = ["RedactingFilter", "configure_logging"]

REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces secrets in a record's final message, whatever put them there.

    :param secrets: strings that must never reach a log line.
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        changed = False
        for secret in self.secrets:
            if secret in message:
                message = message.replace(secret, REDACTED)
                changed = True
            if record.exc_text and secret in record.exc_text:
                record.exc_text = record.exc_text.replace(secret, REDACTED)
        if changed:
            record.msg, record.args = message, None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (as ``logging.lastResort``)."""

    @property
    def stream(self) -> t.TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: t.TextIO) -> None:
        pass


def configure_logging(secrets: list[str], level: int = logging.INFO) -> None:
    """Send ``ngai_chat`` logs to stderr, and scrub ``secrets`` from every handler
    of the ``ngai_chat``, root and ``gunicorn`` loggers. Safe to call again.
    """
    logger = logging.getLogger("ngai_chat")
    if not any(getattr(h, "_ngai_chat", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                "%Y-%m-%d %H:%M:%S %z",
            )
        )
        handler._ngai_chat = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    for name in ("ngai_chat", "", "gunicorn.error", "gunicorn.access"):
        for each in logging.getLogger(name).handlers:
            existing = [f for f in each.filters if isinstance(f, RedactingFilter)]
            if existing:
                existing[0].secrets = sorted({*existing[0].secrets, *secrets} - {""})
            else:
                each.addFilter(RedactingFilter(secrets))
