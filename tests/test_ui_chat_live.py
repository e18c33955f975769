"""The AI SDK door over real sockets: gunicorn + gevent, the fake upstream, Redis.

What takes a running answer: the same answer through ``/stream`` and ``/chat``
(invariant 10), a resume replaying from ``start``, ``DELETE`` and a new ``POST``
stopping the upstream within a second, a dropped connection that does not stop it,
and a chat reached from another instance sharing ``REDIS_URL``.
"""

from __future__ import annotations

import json
import time
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from tests.conftest import API_KEY
from tests.support import rich_answer as rich
from tests.support.redis_server import RedisServer
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events

pytestmark = pytest.mark.live

HEARTBEAT = 0.2


def env_for(fake: fu.FakeUpstream, **more: str) -> dict[str, str]:
    return {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "NGAI_ABANDON_TIMEOUT": "10",
        "NGAI_UPSTREAM_READ_TIMEOUT": "10",
        **more,
    }


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    with LiveApp(env_for(fake)) as live:
        yield live


class PartReader:
    """A UI message stream read over a real socket as it arrives.

    :param response: a streamed ``requests`` response.
    """

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.raw = b""
        self._buffer = b""
        self.parts: list[t.Any] = []
        self.comments = 0

    def next(self) -> t.Any:
        """The next part (``"[DONE]"`` for the last line), ``None`` at the end."""
        while True:
            while b"\n\n" not in self._buffer:
                data = self.response.raw.read1(65536)
                if not data:
                    assert not self._buffer, self._buffer
                    return None
                self.raw += data
                self._buffer += data
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            if block.startswith(b":"):
                self.comments += 1
                continue
            assert block.startswith(b"data: ") and b"\n" not in block, block
            data = block[6:].decode()
            part = data if data == "[DONE]" else json.loads(data)
            self.parts.append(part)
            return part

    def until(self, predicate: t.Callable[[t.Any], bool]) -> t.Any:
        while True:
            part = self.next()
            assert part is not None, self.parts
            if predicate(part):
                return part

    def read_all(self) -> list[t.Any]:
        while self.next() is not None:
            pass
        return self.parts

    def close(self) -> None:
        self.response.close()


def post_chat(app: LiveApp, chat_id: str, model: str, **headers: str) -> PartReader:
    body = {
        "id": chat_id,
        "trigger": "submit-message",
        "model": model,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
    }
    response = requests.post(
        app.url("/chat"), json=body, headers=headers, stream=True, timeout=(5, 20)
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    return PartReader(response)


def resume_chat(app: LiveApp, chat_id: str, **headers: str) -> PartReader | int:
    response = requests.get(
        app.url(f"/chat/{chat_id}/stream"), headers=headers, stream=True, timeout=(5, 20)
    )
    if response.status_code != 200:
        response.close()
        return response.status_code
    return PartReader(response)


def scripted(fake: fu.FakeUpstream, steps: t.Any) -> str:
    model = f"ui/{uuid.uuid4().hex[:12]}"
    fake.script(model, steps)
    return model


def slow(fake: fu.FakeUpstream, words: int = 40, interval: float = 0.05) -> tuple[str, str]:
    pieces = [f"wörd{i} " for i in range(words)]
    return scripted(fake, fu.text_chunks(pieces, interval=interval)), "".join(pieces)


def text_of(parts: list[t.Any], kind: str = "text") -> str:
    return "".join(
        p["delta"] for p in parts if isinstance(p, dict) and p["type"] == f"{kind}-delta"
    )


def test_same_answer_through_stream_and_chat(app: LiveApp, fake: fu.FakeUpstream) -> None:
    """Invariant 10: text, thinking, tool calls, citations, images and usage."""
    model = scripted(fake, rich.steps())
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    sid = requests.post(app.url("/prepare"), json=body, timeout=5).json()["sessionId"]
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        evs = events(reader.read_all())
    chunks = [e.json for e in evs if e.name == "chunk"]
    done = evs[-1].json
    ngai = {
        "text": "".join(c["content"] for c in chunks),
        "thinking": "".join(c["reasoning"] for c in chunks),
        "tools": [
            (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in done["toolCalls"]
        ],
        "citations": [(c["url"], c["title"]) for c in done["citations"]],
        "images": [
            image["image_url"]["url"]
            for c in chunks
            for image in (c["choices"][0]["delta"].get("images", []) if c["choices"] else [])
        ],
        "usage": done["usage"],
        "reasoningDetails": done["reasoningDetails"],
    }
    reader = post_chat(app, uuid.uuid4().hex, model)
    parts = reader.read_all()
    finish = next(p for p in parts if p != "[DONE]" and p["type"] == "finish")
    ui = {
        "text": text_of(parts),
        "thinking": text_of(parts, "reasoning"),
        "tools": [
            (p["toolCallId"], p["toolName"], p["input"])
            for p in parts
            if p != "[DONE]" and p["type"] == "tool-input-available"
        ],
        "citations": [
            (p["url"], p["title"]) for p in parts if p != "[DONE]" and p["type"] == "source-url"
        ],
        "images": [p["url"] for p in parts if p != "[DONE]" and p["type"] == "file"],
        "usage": finish["messageMetadata"]["usage"],
        "reasoningDetails": finish["messageMetadata"]["reasoningDetails"],
    }
    assert ui == ngai
    assert ui["text"] == "".join(rich.ANSWER) and ui["thinking"] == "".join(rich.THOUGHTS)
    assert ui["tools"] == [(rich.TOOL_ID, rich.TOOL_NAME, rich.TOOL_INPUT)]
    assert ui["images"] == [rich.IMAGE] and ui["usage"] == rich.USAGE
    assert finish["finishReason"] == "tool-calls"


def test_resume_replays_from_start_then_follows(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, text = slow(fake)
    chat_id = uuid.uuid4().hex
    first = post_chat(app, chat_id, model)
    first.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
    first.close()  # a reload: the connection drops, the answer goes on
    again = resume_chat(app, chat_id)
    assert isinstance(again, PartReader)
    parts = again.read_all()
    assert parts[0] == first.parts[0]  # the same start, the same message id
    assert text_of(parts) == text
    assert parts[-1] == "[DONE]" and parts[-2]["type"] == "finish"
    assert first.raw in again.raw  # the replay is byte for byte what was sent
    assert len(fake.chat_requests(model)) == 1
    assert resume_chat(app, chat_id) == 204  # finished: nothing to resume


def test_heartbeats_are_comments(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [fu.Pause(HEARTBEAT * 4), *fu.text_chunks(["ok"])])
    reader = post_chat(app, uuid.uuid4().hex, model)
    assert text_of(reader.read_all()) == "ok"
    assert reader.comments >= 2
    assert b": keep-alive\n\n" in reader.raw


def test_delete_stops_the_upstream_within_a_second(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, _ = slow(fake, words=200)
    chat_id = uuid.uuid4().hex
    reader = post_chat(app, chat_id, model)
    reader.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
    request = fake.wait_for_request(model)
    started = time.monotonic()
    assert requests.delete(app.url(f"/chat/{chat_id}/stream"), timeout=5).status_code == 204
    closed_at = fake.wait_closed(request, timeout=3)
    assert closed_at - started < 1.0
    parts = reader.read_all()
    assert parts[-2:] == [{"type": "abort"}, "[DONE]"]
    assert parts[-3]["type"] == "text-end"
    assert resume_chat(app, chat_id) == 204
    assert requests.delete(app.url(f"/chat/{chat_id}/stream"), timeout=5).status_code == 204


def test_a_new_post_stops_the_running_answer(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, _ = slow(fake, words=200)
    chat_id = uuid.uuid4().hex
    first = post_chat(app, chat_id, model)
    first.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
    request = fake.wait_for_request(model)
    quick = scripted(fake, fu.text_chunks(["second"]))
    started = time.monotonic()
    second = post_chat(app, chat_id, quick)
    assert fake.wait_closed(request, timeout=3) - started < 1.0
    assert first.read_all()[-2:] == [{"type": "abort"}, "[DONE]"]
    parts = second.read_all()
    assert text_of(parts) == "second"
    assert parts[0]["messageId"] != first.parts[0]["messageId"]


def test_a_chat_belongs_to_its_token(fake: fu.FakeUpstream) -> None:
    with LiveApp(env_for(fake, NGAI_API_TOKENS="tok-a,tok-b")) as app:
        model, text = slow(fake, words=30)
        chat_id = uuid.uuid4().hex
        a = {"Authorization": "Bearer tok-a"}
        b = {"Authorization": "Bearer tok-b"}
        first = post_chat(app, chat_id, model, **a)
        first.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
        assert resume_chat(app, chat_id, **b) == 204
        status = requests.delete(app.url(f"/chat/{chat_id}/stream"), headers=b, timeout=5)
        assert status.status_code == 204
        assert text_of(first.read_all()) == text  # untouched by the other token
        assert resume_chat(app, chat_id) == 401


@pytest.mark.redis
def test_chat_reached_from_another_instance(fake: fu.FakeUpstream) -> None:
    """With ``REDIS_URL``, a chat started on one instance is resumed and stopped
    through another."""
    with RedisServer() as redis:
        env = env_for(fake, REDIS_URL=redis.url, NGAI_REDIS_KEY_PREFIX="ui-live:")
        with LiveApp(env) as one, LiveApp(env) as two:
            model, text = slow(fake)
            chat_id = uuid.uuid4().hex
            first = post_chat(one, chat_id, model)
            first.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
            again = resume_chat(two, chat_id)
            assert isinstance(again, PartReader)
            parts = again.read_all()
            assert parts[0] == first.parts[0]
            assert text_of(parts) == text
            assert text_of(first.read_all()) == text

            model, _ = slow(fake, words=200)
            chat_id = uuid.uuid4().hex
            running = post_chat(one, chat_id, model)
            running.until(lambda p: p != "[DONE]" and p["type"] == "text-delta")
            request = fake.wait_for_request(model)
            started = time.monotonic()
            response = requests.delete(two.url(f"/chat/{chat_id}/stream"), timeout=5)
            assert response.status_code == 204
            assert fake.wait_closed(request, timeout=3) - started < 1.0
            assert running.read_all()[-2:] == [{"type": "abort"}, "[DONE]"]
