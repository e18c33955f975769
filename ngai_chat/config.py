"""Every setting, named once and parsed once into a frozen :class:`Settings`.

Sources, first match wins: the host app's ``app.config`` (when the blueprint is
mounted), the process environment, then ``.env`` in the working directory. A bad
value stops startup with :class:`ConfigError`, naming the variable and the form it
expects, rather than failing in the middle of a request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing as t
from pathlib import Path

from dotenv import dotenv_values
from limits import RateLimitItem
from limits import parse_many

__all__ = [
    "Budget",
    "ConfigError",
    "Settings",
    "load_server_settings",
    "load_settings",
    "parse_budget",
]

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_MODEL = "mistralai/mistral-7b-instruct:free"
#: the offline model of ``NGAI_DEMO=1`` (:mod:`ngai_chat.upstream.demo`)
DEMO_MODEL = "ngai/demo"
#: ``REDIS_URL`` schemes that select the Redis store; ``memory://`` (or no URL) is
#: this process's memory
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
MEMORY_URL = "memory://"
#: micro-dollars per US dollar: budgets in USD are counted in whole micro-dollars
MICRO = 1_000_000
#: the windows a budget may be spent in, in seconds
WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

MISSING_KEY_MESSAGE = (
    "Missing OPENROUTER_API_KEY: set it in the environment or in a .env file "
    "(OPENROUTER_API_KEY=sk-or-...; get one at https://openrouter.ai/keys), "
    "or set NGAI_DEMO=1 to serve the built-in offline demo model instead."
)


def shared_store_url(url: str | None) -> bool:
    """Whether ``REDIS_URL`` names a store that processes share: the one rule
    (``memory://`` and no URL are this process's memory), read through
    :attr:`Settings.store_shared` and by :func:`~ngai_chat.store.store_from_url`.
    """
    return bool(url) and url != MEMORY_URL


class ConfigError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """An amount that may be spent per window (``NGAI_BUDGET_PER_CLIENT``,
    ``NGAI_BUDGET_TOTAL``; counted by :mod:`ngai_chat.budget`).
    """

    #: tokens, or micro-dollars
    limit: int
    #: ``tokens`` or ``usd``
    unit: t.Literal["tokens", "usd"]
    #: window length in seconds
    window: int
    #: the window's name (``day``)
    per: str

    def describe(self) -> str:
        """The budget as an operator writes it: ``200000 tokens/day``, ``2.50 usd/day``."""
        if self.unit == "usd":
            return f"{self.limit / MICRO:.2f} usd/{self.per}"
        return f"{self.limit} tokens/{self.per}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed configuration of one app (SPEC §2)."""

    #: bearer key for the upstream; empty only in demo mode. Never logged.
    api_key: str = dataclasses.field(default="", repr=False)
    base_url: str = DEFAULT_BASE_URL
    referer: str | None = None
    title: str = "NGAI Chatbot Backend"
    #: the interface ``make run`` listens on; the Procfile binds 0.0.0.0 itself
    host: str = "127.0.0.1"
    port: int = 3000
    redis_url: str | None = None
    demo: bool = False
    default_model: str = DEFAULT_MODEL
    fallback_models: tuple[str, ...] = ()
    model_allowlist: tuple[str, ...] = ()
    system_prompt: str = ""
    session_ttl: float = 600.0
    sweep_interval: float = 30.0
    replay_ttl: float = 300.0
    abandon_timeout: float = 30.0
    heartbeat_interval: float = 15.0
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 120.0
    models_cache_ttl: float = 300.0
    max_body_bytes: int = 10_485_760
    max_sessions: int = 10_000
    max_events: int = 20_000
    max_log_bytes: int = 67_108_864
    max_replay_bytes: int = 268_435_456
    max_event_bytes: int = 16_777_216
    max_sessions_per_client: int = 100
    #: bytes of request bodies one client's unfinished sessions hold together (0: no cap)
    max_client_bytes: int = 67_108_864
    client_timeout: float = 30.0
    cors_origins: tuple[str, ...] = ("*",)
    api_tokens: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    #: the windows of ``NGAI_RATE_LIMIT`` (each applies), or ``None`` for no limit
    rate_limit: tuple[RateLimitItem, ...] | None = None
    #: what one client / the whole server may spend per window, or ``None``
    budget_per_client: Budget | None = None
    budget_total: Budget | None = None
    trusted_proxies: int = 0
    max_streams: int = 5_000
    log_format: str = "text"
    metrics: bool = False
    redis_key_prefix: str = "ngai:"

    @property
    def effective_default_model(self) -> str:
        """The model used when a request names none: the demo model in demo mode,
        else ``NGAI_DEFAULT_MODEL``.
        """
        return DEMO_MODEL if self.demo else self.default_model

    @property
    def effective_allowlist(self) -> tuple[str, ...]:
        """The glob patterns a model must match: ``NGAI_MODEL_ALLOWLIST``, plus the
        demo model when the demo is on (the only model there is then, whatever the
        list says); empty: every model.
        """
        if self.demo and self.model_allowlist and DEMO_MODEL not in self.model_allowlist:
            return (*self.model_allowlist, DEMO_MODEL)
        return self.model_allowlist

    @property
    def store_kind(self) -> str:
        """``"redis"`` or ``"memory"``, as the store ``REDIS_URL`` selects reports it."""
        return "redis" if self.store_shared else "memory"

    @property
    def store_shared(self) -> bool:
        """Whether ``REDIS_URL`` names a store that processes share
        (:func:`shared_store_url`): what gunicorn's worker check, the mounted
        blueprint's warning and the counters of the rate limit and budgets read.
        """
        return shared_store_url(self.redis_url)

    @property
    def open_relay(self) -> bool:
        """Whether anyone who reaches the server can spend the operator's key on any
        model, as often as they like (SPEC §5 invariant 9): a key, and none of
        ``NGAI_API_TOKENS``, ``NGAI_MODEL_ALLOWLIST``, ``NGAI_RATE_LIMIT``.
        """
        return (
            not self.demo
            and bool(self.api_key.strip())
            and not self.api_tokens
            and not self.model_allowlist
            and not self.rate_limit
        )


# --- parsers: each takes the raw string and returns the value or raises ValueError


_N = t.TypeVar("_N", int, float)


def _at_least(
    cast: t.Callable[[str], _N], low: _N, *, above: bool = False
) -> t.Callable[[str], _N]:
    """A parser of finite numbers ``>= low`` (``> low`` with ``above``)."""

    def parse(raw: str) -> _N:
        value = cast(raw)
        if not math.isfinite(value) or value < low or (above and value == low):
            raise ValueError(raw)
        return value

    return parse


_positive_float = _at_least(float, 0.0, above=True)
_non_negative_float = _at_least(float, 0.0)
_positive_int = _at_least(int, 0, above=True)
_non_negative_int = _at_least(int, 0)


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError(raw)
    return value


def _flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _url(raw: str) -> str:
    raw = raw.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", raw):
        raise ValueError(raw)
    return raw


def _text(raw: str) -> str:
    return raw


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() or c == "/" for c in value):
        raise ValueError(raw)
    return value


def _redis_url(raw: str) -> str | None:
    value = raw.strip()
    if value and value != MEMORY_URL and not value.startswith(REDIS_SCHEMES):
        raise ValueError(raw)
    return value or None


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError(raw)
    return value


def _rate(raw: str) -> tuple[RateLimitItem, ...] | None:
    """``"20/minute;500/day"`` → its windows, parsed by :func:`limits.parse_many`
    (``None`` when empty); every window must allow at least one call.
    """
    if not raw.strip():
        return None
    windows = tuple(parse_many(raw.strip()))
    if not windows or any(window.amount < 1 for window in windows):
        raise ValueError(raw)
    return windows


_BUDGET = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(tokens?|usd)\s*/\s*(second|minute|hour|day)\s*$", re.IGNORECASE
)


def parse_budget(raw: str) -> Budget | None:
    """``"200000 tokens/day"`` or ``"2.50 usd/day"`` (also per second, minute, hour).

    :return: ``None`` for an empty value (no budget).
    :raises ValueError: anything else, a zero amount included.
    """
    if not raw.strip():
        return None
    match = _BUDGET.match(raw)
    if not match:
        raise ValueError(raw)
    amount, unit, per = match.group(1), match.group(2).lower(), match.group(3).lower()
    if unit.startswith("token"):
        if "." in amount:
            raise ValueError(raw)  # tokens are whole
        budget = Budget(limit=int(amount), unit="tokens", window=WINDOWS[per], per=per)
    else:
        limit = round(float(amount) * MICRO)
        budget = Budget(limit=limit, unit="usd", window=WINDOWS[per], per=per)
    if budget.limit <= 0:
        raise ValueError(raw)  # a zero budget would refuse everything: surely a typo
    return budget


_BUDGET_FORM = (
    "an amount > 0 of tokens or US dollars per second, minute, hour or day, "
    "such as '200000 tokens/day' or '2.50 usd/day'"
)

#: variable → (Settings field, parser, expected form shown in errors)
VARIABLES: dict[str, tuple[str, t.Callable[[str], t.Any], str]] = {
    "OPENROUTER_API_KEY": ("api_key", _text, "a key string"),
    "OPENROUTER_BASE_URL": (
        "base_url",
        _url,
        "an http(s) URL such as https://openrouter.ai/api/v1",
    ),
    "REFERER": ("referer", _optional_text, "a URL such as https://your-site.example"),
    "X_TITLE": ("title", _text, "a short app name"),
    "HOST": ("host", _host, "an address to listen on, such as 127.0.0.1 or 0.0.0.0"),
    "PORT": ("port", _port, "a port number from 1 to 65535"),
    "REDIS_URL": (
        "redis_url",
        _redis_url,
        "memory://, a redis://, rediss:// or unix:// URL such as redis://localhost:6379/0, "
        "or redis+cluster://host:port[,host:port…] for a Redis Cluster",
    ),
    "NGAI_DEMO": ("demo", _flag, "0 or 1"),
    "NGAI_DEFAULT_MODEL": ("default_model", _text, "a model id"),
    "NGAI_FALLBACK_MODELS": ("fallback_models", _csv, "a comma-separated list of model ids"),
    "NGAI_MODEL_ALLOWLIST": ("model_allowlist", _csv, "comma-separated glob patterns (*:free)"),
    "NGAI_SYSTEM_PROMPT": ("system_prompt", _text, "text"),
    "NGAI_SESSION_TTL": ("session_ttl", _positive_float, "a number of seconds > 0"),
    "NGAI_SWEEP_INTERVAL": ("sweep_interval", _positive_float, "a number of seconds > 0"),
    "NGAI_REPLAY_TTL": ("replay_ttl", _non_negative_float, "a number of seconds >= 0"),
    "NGAI_ABANDON_TIMEOUT": ("abandon_timeout", _non_negative_float, "a number of seconds >= 0"),
    "NGAI_HEARTBEAT_INTERVAL": ("heartbeat_interval", _positive_float, "a number of seconds > 0"),
    "NGAI_UPSTREAM_CONNECT_TIMEOUT": (
        "upstream_connect_timeout",
        _positive_float,
        "a number of seconds > 0",
    ),
    "NGAI_UPSTREAM_READ_TIMEOUT": (
        "upstream_read_timeout",
        _positive_float,
        "a number of seconds > 0",
    ),
    "NGAI_MODELS_CACHE_TTL": ("models_cache_ttl", _non_negative_float, "a number of seconds >= 0"),
    "NGAI_MAX_BODY_BYTES": ("max_body_bytes", _positive_int, "a whole number of bytes > 0"),
    "NGAI_MAX_SESSIONS": ("max_sessions", _positive_int, "a whole number > 0"),
    "NGAI_MAX_EVENTS": ("max_events", _positive_int, "a whole number > 1"),
    "NGAI_MAX_LOG_BYTES": ("max_log_bytes", _positive_int, "a whole number of bytes > 0"),
    "NGAI_MAX_REPLAY_BYTES": ("max_replay_bytes", _positive_int, "a whole number of bytes > 0"),
    "NGAI_MAX_EVENT_BYTES": ("max_event_bytes", _positive_int, "a whole number of bytes > 0"),
    "NGAI_MAX_SESSIONS_PER_CLIENT": (
        "max_sessions_per_client",
        _non_negative_int,
        "a whole number >= 0 (0: no per-client cap)",
    ),
    "NGAI_MAX_CLIENT_BYTES": (
        "max_client_bytes",
        _non_negative_int,
        "a whole number of bytes >= 0 (0: no per-client cap)",
    ),
    "NGAI_CLIENT_TIMEOUT": ("client_timeout", _positive_float, "a number of seconds > 0"),
    "NGAI_CORS_ORIGINS": ("cors_origins", _csv, "* or a comma-separated list of origins"),
    "NGAI_API_TOKENS": ("api_tokens", _csv, "a comma-separated list of tokens"),
    "NGAI_RATE_LIMIT": (
        "rate_limit",
        _rate,
        "N/second, N/minute, N/hour or N/day, several separated by ';' (20/minute;500/day)",
    ),
    "NGAI_BUDGET_PER_CLIENT": ("budget_per_client", parse_budget, _BUDGET_FORM),
    "NGAI_BUDGET_TOTAL": ("budget_total", parse_budget, _BUDGET_FORM),
    "NGAI_TRUSTED_PROXIES": ("trusted_proxies", _non_negative_int, "a whole number >= 0"),
    "NGAI_MAX_STREAMS": ("max_streams", _positive_int, "a whole number > 0"),
    "NGAI_LOG_FORMAT": ("log_format", _log_format, "text or json"),
    "NGAI_METRICS": ("metrics", _flag, "0 or 1"),
    "NGAI_REDIS_KEY_PREFIX": ("redis_key_prefix", _text, "a key prefix such as ngai:"),
}


#: values never repeated in an error message (a URL may carry a password)
_SECRET_VARIABLES = frozenset({"OPENROUTER_API_KEY", "NGAI_API_TOKENS", "REDIS_URL"})


def read_dotenv(path: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The variables of a ``.env`` file, or ``{}`` when there is none."""
    if not Path(path).is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _sources(
    config: t.Mapping[str, t.Any] | None,
    environ: t.Mapping[str, str] | None,
    dotenv: t.Mapping[str, str] | None,
) -> list[t.Mapping[str, t.Any]]:
    return [
        config or {},
        os.environ if environ is None else environ,
        read_dotenv() if dotenv is None else dotenv,
    ]


def _parse(names: t.Iterable[str], sources: list[t.Mapping[str, t.Any]]) -> dict[str, t.Any]:
    """The :class:`Settings` fields of ``names`` that some source sets, parsed.

    :raises ConfigError: a value is malformed.
    """
    values: dict[str, t.Any] = {}
    for name in names:
        field, parse, expected = VARIABLES[name]
        raw = next((src[name] for src in sources if src.get(name) is not None), None)
        if raw is None:
            continue
        if not isinstance(raw, str):
            raw = ",".join(map(str, raw)) if isinstance(raw, list | tuple) else str(raw)
            raw = {"True": "1", "False": "0"}.get(raw, raw)
        try:
            values[field] = parse(raw)
        except ValueError:
            # nor a value with user information (``https://user:password@host``)
            shown = "" if name in _SECRET_VARIABLES or "@" in raw else f"={raw!r}"
            raise ConfigError(
                f"Invalid {name}{shown}: expected {expected}. Fix it in the environment or .env."
            ) from None
    return values


def load_settings(
    config: t.Mapping[str, t.Any] | None = None,
    environ: t.Mapping[str, str] | None = None,
    dotenv: t.Mapping[str, str] | None = None,
) -> Settings:
    """Parse every setting from ``config``, then ``environ``, then ``dotenv``.

    :param config: the host app's ``app.config`` (values may be typed already).
    :param environ: defaults to ``os.environ``.
    :param dotenv: defaults to the variables of ``./.env``.
    :raises ConfigError: a value is malformed, or the API key is missing outside
        demo mode.
    """
    settings = Settings(**_parse(VARIABLES, _sources(config, environ, dotenv)))
    if not settings.demo and not settings.api_key.strip():
        raise ConfigError(MISSING_KEY_MESSAGE)
    if settings.max_events < 2:
        raise ConfigError(
            f"Invalid NGAI_MAX_EVENTS={settings.max_events}: expected a whole number > 1."
        )
    return settings


#: what gunicorn's configuration needs before any app exists
SERVER_VARIABLES = ("HOST", "PORT", "NGAI_LOG_FORMAT")


def load_server_settings(
    environ: t.Mapping[str, str] | None = None,
    dotenv: t.Mapping[str, str] | None = None,
) -> Settings:
    """Parse only ``HOST``, ``PORT`` and ``NGAI_LOG_FORMAT`` (the rest keep their
    defaults, and no key is required): what gunicorn's configuration reads at
    import, before the master checks the whole configuration.

    :raises ConfigError: one of those values is malformed.
    """
    return Settings(**_parse(SERVER_VARIABLES, _sources(None, environ, dotenv)))
