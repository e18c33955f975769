"""Settings: defaults, sources and their order, and startup errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ngai_chat import ConfigError
from ngai_chat import create_app
from ngai_chat.config import MISSING_KEY_MESSAGE
from ngai_chat.config import VARIABLES
from ngai_chat.config import load_settings


def test_defaults_follow_the_spec() -> None:
    settings = load_settings({}, environ={"OPENROUTER_API_KEY": "k"}, dotenv={})
    assert settings.base_url == "https://openrouter.ai/api/v1"
    assert settings.title == "NGAI Chatbot Backend"
    assert settings.port == 3000
    assert settings.default_model == "mistralai/mistral-7b-instruct:free"
    assert (settings.session_ttl, settings.sweep_interval, settings.replay_ttl) == (600, 30, 300)
    assert (settings.abandon_timeout, settings.heartbeat_interval) == (30, 15)
    assert (settings.upstream_connect_timeout, settings.upstream_read_timeout) == (10, 120)
    assert settings.models_cache_ttl == 300
    assert settings.max_body_bytes == 10_485_760
    assert (settings.max_log_bytes, settings.max_event_bytes) == (67_108_864, 16_777_216)
    assert settings.max_client_bytes == 67_108_864
    assert (settings.max_sessions, settings.max_events, settings.max_streams) == (
        10_000,
        20_000,
        5_000,
    )
    assert settings.cors_origins == ("*",)
    assert settings.redis_url is None and not settings.demo and not settings.metrics


def test_missing_key_refuses_to_start_and_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ={}, dotenv={})
    assert str(info.value) == MISSING_KEY_MESSAGE
    assert "Missing OPENROUTER_API_KEY" in str(info.value)
    assert ".env" in str(info.value) and "NGAI_DEMO=1" in str(info.value)


def test_empty_key_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="Missing OPENROUTER_API_KEY"):
        load_settings({}, environ={"OPENROUTER_API_KEY": "  "}, dotenv={})


def test_demo_needs_no_key() -> None:
    settings = load_settings({}, environ={"NGAI_DEMO": "1"}, dotenv={})
    assert settings.demo and settings.effective_default_model == "ngai/demo"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NGAI_SESSION_TTL", "abc", "a number of seconds > 0"),
        ("NGAI_SESSION_TTL", "-5", "a number of seconds > 0"),
        ("NGAI_HEARTBEAT_INTERVAL", "0", "a number of seconds > 0"),
        ("NGAI_MAX_EVENTS", "1.5", "a whole number"),
        ("PORT", "70000", "a port number"),
        ("NGAI_DEMO", "maybe", "0 or 1"),
        ("NGAI_LOG_FORMAT", "xml", "text or json"),
        ("NGAI_RATE_LIMIT", "lots", "N/minute"),
        ("OPENROUTER_BASE_URL", "openrouter.ai", "an http(s) URL"),
    ],
)
def test_malformed_value_names_the_variable_and_the_form(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ={"OPENROUTER_API_KEY": "k", name: value}, dotenv={})
    message = str(info.value)
    assert name in message and repr(value) in message and expected in message


def test_app_config_wins_over_environment_which_wins_over_dotenv() -> None:
    settings = load_settings(
        {"NGAI_SESSION_TTL": 5},
        environ={"OPENROUTER_API_KEY": "env", "NGAI_SESSION_TTL": "6", "X_TITLE": "env title"},
        dotenv={"OPENROUTER_API_KEY": "file", "X_TITLE": "file title", "NGAI_REPLAY_TTL": "7"},
    )
    assert settings.session_ttl == 5
    assert settings.api_key == "env" and settings.title == "env title"
    assert settings.replay_ttl == 7


def test_dotenv_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('OPENROUTER_API_KEY="from-file"\nNGAI_MAX_EVENTS=50\n')
    settings = load_settings({}, environ={})
    assert settings.api_key == "from-file" and settings.max_events == 50


def test_lists_are_comma_separated() -> None:
    settings = load_settings(
        {},
        environ={
            "OPENROUTER_API_KEY": "k",
            "NGAI_MODEL_ALLOWLIST": " *:free , openai/* ",
            "NGAI_FALLBACK_MODELS": "a/b,c/d",
        },
        dotenv={},
    )
    assert settings.model_allowlist == ("*:free", "openai/*")
    assert settings.fallback_models == ("a/b", "c/d")


def test_key_is_not_in_the_settings_repr() -> None:
    settings = load_settings({}, environ={"OPENROUTER_API_KEY": "sk-secret-1"}, dotenv={})
    assert "sk-secret-1" not in repr(settings)


def test_every_spec_variable_is_declared() -> None:
    spec_names = {
        "OPENROUTER_API_KEY",
        "OPENROUTER_BASE_URL",
        "REFERER",
        "X_TITLE",
        "PORT",
        "REDIS_URL",
        "NGAI_DEMO",
        "NGAI_DEFAULT_MODEL",
        "NGAI_FALLBACK_MODELS",
        "NGAI_MODEL_ALLOWLIST",
        "NGAI_SYSTEM_PROMPT",
        "NGAI_SESSION_TTL",
        "NGAI_SWEEP_INTERVAL",
        "NGAI_REPLAY_TTL",
        "NGAI_ABANDON_TIMEOUT",
        "NGAI_HEARTBEAT_INTERVAL",
        "NGAI_UPSTREAM_CONNECT_TIMEOUT",
        "NGAI_UPSTREAM_READ_TIMEOUT",
        "NGAI_MODELS_CACHE_TTL",
        "NGAI_MAX_BODY_BYTES",
        "NGAI_MAX_SESSIONS",
        "NGAI_MAX_EVENTS",
        "NGAI_CORS_ORIGINS",
        "NGAI_API_TOKENS",
        "NGAI_RATE_LIMIT",
        "NGAI_BUDGET_PER_CLIENT",
        "NGAI_BUDGET_TOTAL",
        "NGAI_TRUSTED_PROXIES",
        "NGAI_MAX_STREAMS",
        "NGAI_LOG_FORMAT",
        "NGAI_METRICS",
    }
    assert spec_names <= set(VARIABLES)
    example = (Path(__file__).parents[1] / ".env.example").read_text()
    for name in VARIABLES:
        assert name in example, f"{name} missing from .env.example"


def test_create_app_refuses_to_start_without_a_key() -> None:
    with pytest.raises(ConfigError, match="Missing OPENROUTER_API_KEY"):
        create_app()


def test_create_app_in_demo_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGAI_DEMO", "1")
    app = create_app()
    body = app.test_client().get("/health").get_json()
    assert body["upstream"] == "demo" and body["store"] == "memory"


def test_rate_limit_windows_are_parsed_by_limits() -> None:
    settings = load_settings(
        {}, environ={"OPENROUTER_API_KEY": "k", "NGAI_RATE_LIMIT": "20/minute; 500/day"}, dotenv={}
    )
    assert settings.rate_limit is not None
    assert [(w.amount, w.get_expiry()) for w in settings.rate_limit] == [(20, 60), (500, 86400)]
    assert load_settings({}, environ={"OPENROUTER_API_KEY": "k"}, dotenv={}).rate_limit is None
    for bad in ("0/minute", "20/fortnight", "20/minute;", "-1/second"):
        with pytest.raises(ConfigError) as info:
            load_settings(
                {}, environ={"OPENROUTER_API_KEY": "k", "NGAI_RATE_LIMIT": bad}, dotenv={}
            )
        assert "NGAI_RATE_LIMIT" in str(info.value) and "20/minute;500/day" in str(info.value)
