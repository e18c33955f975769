"""Property-based fuzzing of every endpoint (issue 8): whatever a client sends,
no 5xx, no traceback, JSON errors of SPEC §4's shape, and never the API key.

Most examples go through the Flask test client (fast); a few go to the app
served by gunicorn, where the bytes cross a real socket. Every run is bounded
(``max_examples``) so that the whole file stays well under a minute.
"""

from __future__ import annotations

import json
import re
import typing as t
import urllib.parse
import uuid

import pytest
import requests
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from bench.live import LiveApp
from ngai_chat import create_app
from tests.conftest import API_KEY
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import text_stream

ASCII_ID = re.compile(r"[0-9]{1,11}")
MODELS = {"data": [{"id": "a/free:free", "pricing": {"prompt": "0", "completion": "0"}}]}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# --- strategies -------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
roles = st.sampled_from(["user", "assistant", "system", "tool"]) | st.text(max_size=8)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles, "content": st.text(max_size=40) | json_values},
        optional={
            "name": json_values,
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "reasoning_details": json_values,
            "extra": json_values,
        },
    )
    | json_values,
    max_size=4,
)
PARAMS = ["temperature", "max_tokens", "stop", "logit_bias", "tools", "models", "plugins"]
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": messages},
        optional={
            "model": st.text(max_size=30) | json_values,
            **{name: json_values for name in PARAMS},
            "session_id": st.text(max_size=20),
            "stream": json_values,
        },
    ),
)


def wsgi_text(value: str) -> str:
    """``value`` as a WSGI header arrives: its UTF-8 bytes read as latin-1, less
    the bytes no HTTP header can hold (CR, LF, NUL).
    """
    raw = value.encode("utf-8", "surrogatepass")
    return raw.translate(None, b"\r\n\x00").decode("latin-1")


header_text = st.text(max_size=40).map(wsgi_text)
header_sets = st.fixed_dictionaries(
    {},
    optional={
        "Last-Event-ID": header_text | st.integers(-5, 10**12).map(str),
        "Authorization": header_text
        | st.just("Bearer tok-good")
        | st.text().map(lambda s: "Bearer " + wsgi_text(s)),
        "Content-Type": header_text
        | st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"]),
        "Origin": header_text,
        "X-Forwarded-For": header_text,
    },
)
query_strings = st.text(max_size=40).map(lambda s: urllib.parse.quote(s, safe="=&"))
last_event_ids = st.text(max_size=12).map(lambda s: "lastEventId=" + urllib.parse.quote(s))
paths = st.text(max_size=40).map(lambda s: urllib.parse.quote(s, safe="/"))

# --- checks ------------------------------------------------------------------------


def check(
    status: int, content_type: str, body: bytes, headers: t.Mapping[str, str], path: str = ""
) -> None:
    """What every answer must be, whatever was asked (errors under ``/v1`` in
    OpenAI's shape, SPEC §3; everywhere else SPEC §4's).
    """
    assert status < 500, (status, body[:500])
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text
    assert API_KEY not in text and API_KEY.removeprefix("sk-") not in text
    assert all(API_KEY not in value for value in headers.values())
    if status >= 400 and content_type.startswith("application/json") and body:
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str) and error["message"]
        if path.startswith("/v1/"):
            assert set(error) == {"message", "type", "param", "code"}
            if status == 429:
                assert int(headers["Retry-After"]) > 0
        else:
            assert error["status"] == status
            if status in (429, 503):
                assert headers["Retry-After"] == str(error["retryAfter"])


def check_response(response: t.Any) -> None:
    body = response.get_data()
    path = response.request.path
    check(
        response.status_code, response.headers.get("Content-Type", ""), body, response.headers, path
    )
    if response.request.method != "HEAD" and response.status_code >= 400:
        assert body, "an error without its JSON body"


@pytest.fixture(params=["open", "guarded"])
def fuzz_client(request: pytest.FixtureRequest, clock: t.Any) -> t.Any:
    """A test client over an app open to all, or one with every per-client guard on."""
    config: dict[str, str] = {"OPENROUTER_API_KEY": API_KEY, "NGAI_METRICS": "1"}
    if request.param == "guarded":
        config.update(
            NGAI_API_TOKENS="tok-good",
            NGAI_RATE_LIMIT="1000/second;100000/day",
            NGAI_MAX_SESSIONS_PER_CLIENT="5",
            NGAI_MODEL_ALLOWLIST="*:free",
            NGAI_TRUSTED_PROXIES="1",
        )
    upstream = ScriptedUpstream(text_stream("fuzz ", "answer"), models=MODELS)
    app = create_app(config, upstream=upstream, clock=clock)
    return app.test_client()


# --- in process (the Flask test client) --------------------------------------------------


@FUZZ
@given(body=bodies, headers=header_sets)
def test_prepare_json_bodies(fuzz_client: t.Any, body: t.Any, headers: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    response = fuzz_client.post("/prepare", data=data, headers=headers)
    check_response(response)
    if response.status_code == 200:
        assert set(response.get_json()) == {"sessionId", "streamUrl", "expiresAt"}


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), headers=header_sets)
def test_prepare_raw_bodies(fuzz_client: t.Any, raw: bytes, headers: dict[str, str]) -> None:
    check_response(fuzz_client.post("/prepare", data=raw, headers=headers))


@FUZZ
@given(
    body=bodies,
    headers=header_sets,
    door=st.sampled_from(["/chat", "/v1/chat/completions"]),
)
def test_the_other_doors_json_bodies(
    fuzz_client: t.Any, body: t.Any, headers: dict[str, str], door: str
) -> None:
    """``POST /chat`` and ``POST /v1/chat/completions`` take any JSON: a clear
    refusal or an answer, never a 5xx.
    """
    response = fuzz_client.post(door, data=json.dumps(body).encode(), headers=headers)
    check_response(response)


@FUZZ
@given(
    path=paths,
    query=query_strings | last_event_ids,
    headers=header_sets,
    method=st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS"]),
)
def test_stream_paths(
    fuzz_client: t.Any, path: str, query: str, headers: dict[str, str], method: str
) -> None:
    response = fuzz_client.open(
        "/stream/" + path, method=method, query_string=query, headers=headers
    )
    check_response(response)
    if method == "GET":
        assert response.status_code in (200, 204)


@FUZZ
@given(query=last_event_ids | query_strings, headers=header_sets)
def test_stream_of_a_real_session(fuzz_client: t.Any, query: str, headers: dict[str, str]) -> None:
    # a last event id past the end of the log waits for the log to end, then ends
    prepared = fuzz_client.post(
        "/prepare",
        json={"model": "a/free:free", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": "Bearer tok-good", "X-Forwarded-For": uuid.uuid4().hex},
    )
    assert prepared.status_code == 200, prepared.get_data()
    url = prepared.get_json()["streamUrl"]
    check_response(fuzz_client.get(url, query_string=query, headers=headers))


@FUZZ
@given(
    path=st.sampled_from(
        [
            *("/", "/models", "/health", "/openapi.json", "/metrics", "/prepare", "/chat"),
            *("/v1/models", "/v1/chat/completions", "/v1/", "/chat/x/stream"),
        ]
    )
    # (a path of "//…" would be read by the test client as a URL with a host)
    | paths.map(lambda p: "/" + p.lstrip("/")),
    query=query_strings,
    headers=header_sets,
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
)
def test_every_other_endpoint(
    fuzz_client: t.Any, path: str, query: str, headers: dict[str, str], method: str
) -> None:
    response = fuzz_client.open(path, method=method, query_string=query, headers=headers)
    check_response(response)


# --- over a real socket ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> t.Iterator[LiveApp]:
    with LiveApp({"NGAI_DEMO": "1", "NGAI_METRICS": "1", "OPENROUTER_API_KEY": API_KEY}) as app:
        yield app


@pytest.mark.live
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=paths,
    query=query_strings | last_event_ids,
    body=bodies,
    headers=header_sets,
    method=st.sampled_from(["GET", "HEAD", "DELETE", "POST"]),
    where=st.sampled_from(["/stream/", "/prepare", "/"]),
)
def test_live_server(
    live: LiveApp,
    path: str,
    query: str,
    body: t.Any,
    headers: dict[str, str],
    method: str,
    where: str,
) -> None:
    url = live.url((where + path if where != "/prepare" else where) + "?" + query)
    # requests sends str header values as latin-1 (the same bytes as the WSGI
    # text), and refuses leading whitespace
    response = requests.request(
        method,
        url,
        data=json.dumps(body).encode() if method == "POST" else None,
        headers={name: value.lstrip() for name, value in headers.items()},
        timeout=10,
    )
    check(
        response.status_code,
        response.headers.get("Content-Type", ""),
        response.content,
        response.headers,
    )
