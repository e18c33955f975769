"""Checks a ``/prepare`` request passes before a session is created."""

from __future__ import annotations

import fnmatch

from .errors import ModelNotAllowed

__all__ = ["check_model_allowed", "model_allowed"]


def model_allowed(model: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``model`` matches one of the glob patterns (all allowed when empty)."""
    return not allowlist or any(fnmatch.fnmatchcase(model, pattern) for pattern in allowlist)


def check_model_allowed(model: str, allowlist: tuple[str, ...], field: str = "model") -> None:
    """:raises ModelNotAllowed: ``model`` is outside ``NGAI_MODEL_ALLOWLIST``."""
    if not model_allowed(model, allowlist):
        raise ModelNotAllowed(
            f"The model '{model}' is not allowed on this server. Allowed: "
            + ", ".join(allowlist)
            + ". GET /models lists them.",
            field=field,
        )
