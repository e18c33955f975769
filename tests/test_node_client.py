"""The seed NGAI README's client code, run unchanged in Node against the live app.

``tests/node/seed_client.mjs`` runs the README's "Example Client Code" block and its
``chatWithAI(message)`` function with a real WHATWG EventSource (the ``eventsource``
npm package, pinned in ``tests/node/package.json``), against gunicorn + gevent on
127.0.0.1 relaying from the fake upstream, and prints one JSON line with what the code
saw. These tests hold that output to the SPEC: the exact text, one ``done``, server
``error`` events whose data the README's ``JSON.parse(e.data)`` reads, and an
EventSource that ends up CLOSED by itself (the server's 204), never reconnecting in a
loop.

Needs ``node`` (20+) and ``npm ci --prefix tests/node``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import typing as t
import uuid

import pytest

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from ngai_chat.upstream.demo import demo_reply

pytestmark = pytest.mark.live

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "seed_client.mjs"
SEED_MODEL = "mistralai/mistral-7b-instruct:free"
CLOSED = 2  # EventSource.CLOSED
RETRY_MS = 3000  # the stream's `retry:` field: how long EventSource waits to reconnect
HEARTBEAT = 0.2
NODE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` binary, once the pinned ``eventsource`` package is installed."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node (20 or later) is not on PATH; the seed client tests run in Node")
    if not (NODE_DIR / "node_modules" / "eventsource" / "package.json").is_file():
        pytest.fail(
            "tests/node/node_modules is missing: run `npm ci --prefix tests/node` "
            "(installs the pinned `eventsource` package from tests/node/package-lock.json)"
        )
    return binary


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": "test-key",
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "NGAI_UPSTREAM_READ_TIMEOUT": "5",
    }
    with LiveApp(env) as live:
        yield live


def run_seed(node: str, base_url: str, mode: str, arg: str, message: str | None = None) -> t.Any:
    """Run the seed client; its last stdout line is the JSON result."""
    cmd = [node, str(SCRIPT), base_url, mode, arg]
    if message is not None:
        cmd.append(message)
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        encoding="utf-8",
        timeout=NODE_TIMEOUT,
        env={**os.environ, "NGAI_NODE_CLIENT_TIMEOUT_MS": "20000"},
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output\n{proc.stderr}"
    result = json.loads(lines[-1])
    result["stderr"] = proc.stderr
    return result


def new_model() -> str:
    return f"node/{uuid.uuid4().hex[:12]}"


def assert_ended_by_itself(result: t.Any) -> None:
    assert result["exception"] is None, result
    assert result["uncaught"] == [], result
    assert result["timedOut"] is False, result
    assert result["closed"] is True and result["readyState"] == CLOSED, result
    assert result["eventSources"] == 1, result
    assert result["otherEvents"] == [], result


def assert_clean_done(result: t.Any) -> None:
    """One connection, events 1..N, exactly one `done`, closed by the seed code."""
    assert_ended_by_itself(result)
    assert result["prepare"]["status"] == 200, result["prepare"]
    assert result["doneEvents"] == 1, result
    assert result["errorEvents"] == [], result
    assert result["listenerExceptions"] == [], result
    assert [(c["status"], c["lastEventId"]) for c in result["connections"]] == [(200, None)]
    assert result["connections"][0]["contentType"].startswith("text/event-stream")
    ids = result["eventIds"]
    assert ids == [str(n) for n in range(1, len(ids) + 1)], ids
    assert len(ids) == result["chunkEvents"] + 1


# --- normal answers ---------------------------------------------------------------

PIECES = ["  Grüße", ", 世界", "! 😀", " naïve\tcafé ", "\n", "— ok ", " "]


@pytest.mark.parametrize("mode", ["example", "chat", "content"])
def test_scripted_text_arrives_exactly(
    node: str, app: LiveApp, fake: fu.FakeUpstream, mode: str
) -> None:
    model = new_model()
    fake.script(model, fu.text_chunks(PIECES, model="provider/answering-model"))
    result = run_seed(node, app.base_url, mode, model)
    assert_clean_done(result)
    assert result["text"] == "".join(PIECES)
    # role chunk, one per piece, finish chunk, usage chunk (choices: [])
    assert result["chunkEvents"] == len(PIECES) + 3
    done = result["doneData"][0]
    assert done["finishReason"] == "stop"
    assert done["model"] == "provider/answering-model"
    assert done["usage"] == dict(fu.DEFAULT_USAGE)
    if mode == "example":
        # the README block logs one line per chunk event, then "Stream completed"
        assert result["chunkLogs"] == ["", *PIECES, "", ""]
        assert result["consoleLines"][-1] == {
            "kind": "log",
            "during": "done",
            "args": ["Stream completed"],
        }
    else:
        assert result["consoleLines"] == [
            {"kind": "log", "during": "done", "args": ["Conversation complete"]}
        ]


def test_readme_model_name_and_echo(node: str, app: LiveApp, fake: fu.FakeUpstream) -> None:
    """chatWithAI exactly as written, the README's own model; the upstream echoes."""
    fake.script(SEED_MODEL, fake.echo)
    message = "  Hello, how are you? Ça va — 你好 😀  "
    result = run_seed(node, app.base_url, "chat", "-", message)
    assert_clean_done(result)
    assert result["model"] == SEED_MODEL
    assert result["text"] == message
    request = fake.wait_for_request(SEED_MODEL)
    assert request.json["messages"] == [{"role": "user", "content": message}]
    assert request.json["stream"] is True


def test_multibyte_split_across_reads_slow_stream(
    node: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    """Characters split across network reads, OpenRouter's processing comments and
    silences longer than the heartbeat: the client sees whole text and nothing else."""
    text = " héllo, wörld 😀 亚 — ok "
    body = b"data: " + fu._dumps(fu.make_chunk(text)) + b"\n\n"
    model = new_model()
    fake.script(
        model,
        [
            fu.Comment(),
            fu.Pause(HEARTBEAT * 3),
            fu.Trickle(body, size=1, interval=0.001),
            fu.Pause(HEARTBEAT * 3),
            fu.Comment(),
            *fu.text_chunks([" x\n"]),
        ],
    )
    for mode in ("example", "content"):
        result = run_seed(node, app.base_url, mode, model)
        assert_clean_done(result)
        assert result["text"] == text + " x\n"


@pytest.mark.parametrize("mode", ["example", "chat", "content"])
def test_recorded_openrouter_stream(node: str, app: LiveApp, mode: str) -> None:
    result = run_seed(node, app.base_url, mode, "fixture:01-plain-text-usage-claude37")
    assert_clean_done(result)
    assert result["text"] == 'You used 3,600 "a" characters in your message.'
    assert result["doneData"][0]["model"] == "anthropic/claude-3.7-sonnet"
    assert result["doneData"][0]["usage"]["total_tokens"] == 1439


def test_recorded_tool_call_with_null_content_and_empty_choices(node: str, app: LiveApp) -> None:
    """`delta.content: null` and the usage chunk's `choices: []` do not trip
    `data.choices[0]?.delta?.content` (the README's example block)."""
    result = run_seed(
        node, app.base_url, "example", "fixture:03-tool-call-bedrock-haiku45-empty-choices-usage"
    )
    assert_clean_done(result)
    assert result["text"] == ""
    assert result["doneData"][0]["finishReason"] == "tool_calls"


def test_second_tab_replays_finished_stream(node: str, app: LiveApp, fake: fu.FakeUpstream) -> None:
    """The README block on a session another client already read: the same events from
    the session's log, and no second upstream request."""
    model = new_model()
    fake.script(model, fu.text_chunks(PIECES))
    first = run_seed(node, app.base_url, "chat", model)
    assert_clean_done(first)
    again = run_seed(node, app.base_url, "stream", first["sessionId"])
    assert_ended_by_itself(again)
    assert again["text"] == "".join(PIECES)
    assert again["eventIds"] == first["eventIds"]
    assert again["doneEvents"] == 1 and again["errorEvents"] == []
    assert len([r for r in fake.requests if r.model == model]) == 1


# --- errors -----------------------------------------------------------------------


def test_upstream_rate_limit_in_chat_with_ai(
    node: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    """chatWithAI's error listener parses the server's error event and closes."""
    model = new_model()
    fake.script(model, [fu.error_response(429, headers={"Retry-After": "7"})])
    result = run_seed(node, app.base_url, "chat", model)
    assert_ended_by_itself(result)
    assert result["doneEvents"] == 0 and result["chunkEvents"] == 0
    assert result["listenerExceptions"] == []
    [event] = result["errorEvents"]
    assert event["kind"] == "server-event" and event["lastEventId"] == "1"
    [error] = result["serverErrors"]
    assert error["code"] == "upstream_rate_limited"
    assert error["status"] == 429 and error["retryable"] is True
    assert [(c["status"], c["lastEventId"]) for c in result["connections"]] == [(200, None)]


def test_upstream_rate_limit_in_example_block_stops_after_204(
    node: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    """The README block does not close on `error`: EventSource reconnects once, with
    Last-Event-ID, gets 204 and stays CLOSED. The block's JSON.parse(e.data) reads the
    server's error event; on the two data-less connection errors (stream ended, 204)
    it throws, as it would in a browser."""
    model = new_model()
    fake.script(model, [fu.error_response(429)])
    result = run_seed(node, app.base_url, "example", model)
    assert_ended_by_itself(result)
    assert [e["code"] for e in result["serverErrors"]] == ["upstream_rate_limited"]
    assert_single_reconnect_then_204(result, last_event_id="1")
    assert len([r for r in fake.requests if r.model == model]) == 1


def test_midstream_error_keeps_partial_text(node: str, app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = new_model()
    steps = fu.text_chunks(["Hello", " wor"], finish_reason=None, usage=None, done=False)
    fake.script(model, [*steps, fu.error_chunk(502, "Provider returned error")])
    result = run_seed(node, app.base_url, "content", model)
    assert_ended_by_itself(result)
    assert result["text"] == "Hello wor"
    assert result["doneEvents"] == 0 and result["listenerExceptions"] == []
    [error] = result["serverErrors"]
    assert error["code"] == "upstream_error" and error["message"] == "Provider returned error"


@pytest.mark.parametrize("kind", ["unknown-uuid", "not-an-id"])
def test_unknown_session_ends_by_itself(node: str, app: LiveApp, kind: str) -> None:
    session_id = str(uuid.uuid4()) if kind == "unknown-uuid" else "not-a-session-id"
    result = run_seed(node, app.base_url, "stream", session_id)
    assert_ended_by_itself(result)
    assert result["chunkEvents"] == 0 and result["doneEvents"] == 0
    [error] = result["serverErrors"]
    assert error["code"] == "session_not_found"
    assert error["status"] == 404 and error["retryable"] is False
    assert_single_reconnect_then_204(result, last_event_id="1")


def assert_single_reconnect_then_204(result: t.Any, *, last_event_id: str) -> None:
    connections = result["connections"]
    assert [(c["status"], c["lastEventId"]) for c in connections] == [
        (200, None),
        (204, last_event_id),
    ], connections
    # the reconnect waited for the stream's `retry: 3000`
    assert connections[1]["at"] - connections[0]["at"] >= RETRY_MS - 100
    kinds = [(e["kind"], e["readyState"], e["code"]) for e in result["errorEvents"]]
    assert kinds == [
        ("server-event", 1, None),  # OPEN: the JSON error event
        ("connection-error", 0, None),  # CONNECTING: the stream ended, reconnect scheduled
        ("connection-error", CLOSED, 204),  # the 204: no more reconnects
    ], kinds
    # the README's `JSON.parse(e.data)` throws only on the data-less connection errors
    thrown = [(x["eventKind"], x["name"]) for x in result["listenerExceptions"]]
    assert thrown == [("connection-error", "SyntaxError")] * 2, thrown
    assert result["notes"], result


# --- demo mode --------------------------------------------------------------------


def test_demo_mode_without_key(node: str) -> None:
    message = "Tell me about  SSE, s'il vous plaît 😀"
    env = {"NGAI_DEMO": "1"}
    with LiveApp(env) as demo:
        result = run_seed(node, demo.base_url, "chat", "-", message)
    assert_clean_done(result)
    assert result["text"] == demo_reply([{"role": "user", "content": message}])
    assert result["chunkEvents"] > 20
    assert result["doneData"][0]["finishReason"] == "stop"
