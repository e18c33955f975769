"""The Vercel AI SDK itself reads ``POST /chat``: ``ai`` 5, 6 and 7, in Node.

``tests/node_ai/ui_client.mjs`` runs the SDK's ``DefaultChatTransport``
(``sendMessages``, ``reconnectToStream``) and ``readUIMessageStream``, which validate
every chunk against the SDK's own schema and assemble the final ``UIMessage``, against
gunicorn + gevent on 127.0.0.1 relaying from the fake upstream. These tests hold what
the SDK assembled to the SPEC: a plain answer; thinking, citations, a tool call and
an image; a fetch aborted mid-answer then resumed, ending with exactly the
uninterrupted message (invariant 11); errors.

Needs ``node`` (20+) and ``npm ci --prefix tests/node_ai`` (the pinned ``ai`` versions).
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
from tests.support import rich_answer as rich

pytestmark = pytest.mark.live

NODE_DIR = ROOT / "tests" / "node_ai"
SCRIPT = NODE_DIR / "ui_client.mjs"
VERSIONS = ["5", "6", "7"]
PIECES = ["  Grüße", ", 世界", "! 😀", " naïve\tcafé ", "\n", "— ok ", " "]


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node (20 or later) is not on PATH; the AI SDK tests run in Node")
    for alias in ("ai5", "ai6", "ai7"):
        if not (NODE_DIR / "node_modules" / alias / "package.json").is_file():
            pytest.fail(
                "tests/node_ai/node_modules is missing: run `npm ci --prefix tests/node_ai` "
                "(installs ai 5, 6 and 7 pinned in tests/node_ai/package-lock.json)"
            )
    return binary


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": "test-key",
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": "0.2",
        "NGAI_ABANDON_TIMEOUT": "10",
        "NGAI_UPSTREAM_READ_TIMEOUT": "5",
    }
    with LiveApp(env) as live:
        yield live


def run(node: str, version: str, app: LiveApp, mode: str, **request: t.Any) -> t.Any:
    """Run the SDK client; its last stdout line is the JSON result."""
    request.setdefault("chatId", uuid.uuid4().hex[:16])
    request.setdefault("messages", [user("Hello")])
    proc = subprocess.run(
        [node, str(SCRIPT), version, app.base_url, mode, json.dumps(request)],
        cwd=NODE_DIR,
        capture_output=True,
        encoding="utf-8",
        timeout=60,
        env=dict(os.environ),
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output\n{proc.stderr}"
    return json.loads(lines[-1])


def user(text: str) -> dict[str, t.Any]:
    return {"id": uuid.uuid4().hex[:8], "role": "user", "parts": [{"type": "text", "text": text}]}


def scripted(fake: fu.FakeUpstream, steps: t.Any) -> str:
    model = f"sdk/{uuid.uuid4().hex[:12]}"
    fake.script(model, steps)
    return model


def without_id(message: dict[str, t.Any]) -> dict[str, t.Any]:
    return {key: value for key, value in message.items() if key != "id"}


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_answer(node: str, app: LiveApp, fake: fu.FakeUpstream, version: str) -> None:
    model = scripted(fake, fu.text_chunks(PIECES, model="provider/answering-model"))
    result = run(node, version, app, "send", body={"model": model})
    assert result.get("thrown") is None, result
    assert result["errors"] == []
    message = result["message"]
    assert message["role"] == "assistant" and message["id"].startswith("msg-")
    assert message["parts"] == [
        {"type": "step-start"},
        {"type": "text", "text": "".join(PIECES), "state": "done"},
    ]
    assert message["metadata"] == {
        "model": "provider/answering-model",
        "usage": dict(fu.DEFAULT_USAGE),
        "generationId": message["metadata"]["generationId"],
    }
    assert message["metadata"]["generationId"].startswith("gen-fake-")
    chunks = result["chunks"]
    assert chunks[:3] == ["start", "start-step", "text-start"]
    assert chunks[-3:] == ["text-end", "finish-step", "finish"]
    assert chunks.count("text-delta") == len(PIECES)  # one per piece


@pytest.mark.parametrize("version", VERSIONS)
def test_thinking_citations_tool_call_and_image(
    node: str, app: LiveApp, fake: fu.FakeUpstream, version: str
) -> None:
    model = scripted(fake, rich.steps())
    result = run(node, version, app, "send", body={"model": model})
    assert result.get("thrown") is None and result["errors"] == [], result
    message = result["message"]
    by_type: dict[str, list[t.Any]] = {}
    for part in message["parts"]:
        by_type.setdefault(part["type"], []).append(part)
    assert [p["type"] for p in message["parts"]] == [
        "step-start",
        "reasoning",
        "text",
        "source-url",
        f"tool-{rich.TOOL_NAME}",
        "file",
    ]
    [reasoning] = by_type["reasoning"]
    assert reasoning["text"] == "".join(rich.THOUGHTS) and reasoning["state"] == "done"
    [text] = by_type["text"]
    assert text["text"] == "".join(rich.ANSWER) and text["state"] == "done"
    [source] = by_type["source-url"]
    assert (source["url"], source["title"]) == (rich.SOURCE["url"], rich.SOURCE["title"])
    [tool] = by_type[f"tool-{rich.TOOL_NAME}"]
    assert tool["toolCallId"] == rich.TOOL_ID
    assert tool["state"] == "input-available"
    assert tool["input"] == rich.TOOL_INPUT
    [image] = by_type["file"]
    assert image == {"type": "file", "mediaType": "image/png", "url": rich.IMAGE}
    metadata = message["metadata"]
    assert metadata["usage"] == rich.USAGE
    assert metadata["model"] == rich.MODEL
    assert metadata["reasoningDetails"] == [
        {"type": "reasoning.text", "index": 0, "text": "".join(rich.THOUGHTS)}
    ]
    assert result["chunks"][-1] == "finish"


@pytest.mark.parametrize("version", VERSIONS)
def test_aborted_fetch_then_resume_ends_with_the_uninterrupted_message(
    node: str, app: LiveApp, fake: fu.FakeUpstream, version: str
) -> None:
    """Invariant 11: a reload mid-answer (the fetch aborted, then ``resume``) ends with
    exactly the message of a client that never lost its connection."""
    model = scripted(fake, rich.steps(interval=0.15))
    whole = run(node, version, app, "send", body={"model": model})
    assert whole.get("thrown") is None and whole["errors"] == [], whole
    chat_id = uuid.uuid4().hex[:16]
    result = run(node, version, app, "abort", chatId=chat_id, body={"model": model}, abortAfter=2)
    assert result.get("thrown") is None, result
    assert result["resumed"] is True, result
    assert result["errors"] == []
    partial_text = "".join(
        p.get("text", "") for p in result["partial"]["parts"] if p["type"] == "text"
    )
    assert partial_text and "".join(rich.ANSWER).startswith(partial_text)
    assert partial_text != "".join(rich.ANSWER)  # it was cut mid-answer
    assert result["partial"]["id"] == result["message"]["id"]  # the same message, replayed
    generation = result["message"]["metadata"]["generationId"]
    expected = json.loads(
        json.dumps(whole["message"]).replace(
            whole["message"]["metadata"]["generationId"], generation
        )
    )
    assert without_id(result["message"]) == without_id(expected)
    assert len([r for r in fake.requests if r.model == model]) == 2  # one per answer
    # the answer is over: nothing left to resume
    assert run(node, version, app, "resume", chatId=chat_id) == {"resumed": False}


@pytest.mark.parametrize("version", VERSIONS)
def test_errors(node: str, app: LiveApp, fake: fu.FakeUpstream, version: str) -> None:
    # refused before the stream: the SDK throws with the JSON body's text
    bad = {"id": "x", "role": "user", "parts": [{"type": "text", "text": "a"}, {"type": "video"}]}
    result = run(node, version, app, "send", messages=[user("a"), bad])
    assert "messages[1].parts[1].type" in result["thrown"], result
    assert '"invalid_request"' in result["thrown"]

    # the upstream refuses: an error part, which the SDK reports
    model = scripted(fake, [fu.error_response(429)])
    result = run(node, version, app, "send", body={"model": model})
    assert result.get("thrown") is None, result
    assert result["chunks"] == ["start", "start-step", "error"]
    [error] = result["errors"]
    assert "rate" in error.lower()

    # a mid-stream error: the partial text stays, then the error
    steps = fu.text_chunks(["Hello", " wor"], finish_reason=None, usage=None, done=False)
    model = scripted(fake, [*steps, fu.error_chunk(502, "Provider returned error")])
    result = run(node, version, app, "send", body={"model": model})
    assert result["errors"] == ["Provider returned error"], result
    texts = [p["text"] for p in result["message"]["parts"] if p["type"] == "text"]
    assert texts == ["Hello wor"]
    assert result["chunks"][-2:] == ["text-end", "error"]

    # nothing running for an unknown chat: reconnectToStream gives null (204)
    assert run(node, version, app, "resume", chatId="never-seen") == {"resumed": False}
