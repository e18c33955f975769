"""The relay over real sockets: gunicorn + gevent on 127.0.0.1, a fake upstream beside it.

One app process serves most tests (short heartbeat, abandon and read timeouts);
each test scripts its own model name on the shared fake upstream.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import free_port
from bench.live import readers_that_never_read
from bench.live import vm_rss_kib
from tests.conftest import API_KEY
from tests.support.sse_parse import Frame
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import texts

pytestmark = pytest.mark.live

HEARTBEAT = 0.5
ABANDON = 1.0
READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        "NGAI_ABANDON_TIMEOUT": str(ABANDON),
        "NGAI_UPSTREAM_READ_TIMEOUT": str(READ_TIMEOUT),
        "NGAI_UPSTREAM_CONNECT_TIMEOUT": "2",
        # below the 16 MiB default, so that an endless event is cut off quickly
        "NGAI_MAX_EVENT_BYTES": "1048576",
    }
    with LiveApp(env) as live:
        yield live


def model_name() -> str:
    return f"test/{uuid.uuid4().hex[:12]}"


def prepare(app: LiveApp, model: str, content: str = "Hello", **headers: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    response = requests.post(app.url("/prepare"), json=body, headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    return str(response.json()["sessionId"])


def read_stream(app: LiveApp, sid: str, **headers: str) -> list[Frame]:
    with StreamReader(app.url(f"/stream/{sid}"), headers=headers) as reader:
        assert reader.status == 200
        return reader.read_all()


def scripted(fake: fu.FakeUpstream, steps: t.Any) -> str:
    model = model_name()
    fake.script(model, steps)
    return model


# --- recorded OpenRouter streams ------------------------------------------------


def test_recorded_stream_with_comments_and_usage(app: LiveApp) -> None:
    model = "fixture:01-plain-text-usage-claude37"
    frames = read_stream(app, prepare(app, model))
    evs = events(frames)
    assert texts(frames) == 'You used 3,600 "a" characters in your message.'
    assert [e.name for e in evs].count("done") == 1 and evs[-1].name == "done"
    assert all(e.name == "chunk" for e in evs[:-1])
    done = evs[-1].json
    assert done["finishReason"] == "stop"
    assert done["model"] == "anthropic/claude-3.7-sonnet"
    assert done["usage"]["total_tokens"] == 1439
    # the processing comment is not relayed as anything a client would render
    assert not any("OPENROUTER" in (f.data or "") for f in frames)


def test_recorded_tool_call_with_empty_choices_usage(app: LiveApp) -> None:
    evs = events(
        read_stream(app, prepare(app, "fixture:03-tool-call-bedrock-haiku45-empty-choices-usage"))
    )
    chunks = [e.json for e in evs if e.name == "chunk"]
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_all_tabs"
    assert chunks[-1]["choices"] == [] and chunks[-1]["content"] == ""
    assert evs[-1].json == {
        "finishReason": "tool_calls",
        "model": "anthropic/claude-4.5-haiku-20251001",
        "usage": {"prompt_tokens": 25105, "completion_tokens": 55, "total_tokens": 25160},
        "generationId": "gen-1772969079-EhEx5DeV7JqM43lpl47Y",
        "citations": [],
        "reasoningDetails": [],
        "toolCalls": [
            {
                "id": "toolu_bdrk_01AMXFNuQYF6fxS1hryPtu9K",
                "type": "function",
                "function": {"name": "get_all_tabs", "arguments": ""},
            }
        ],
    }


def test_recorded_partial_stream_is_interrupted(app: LiveApp) -> None:
    frames = read_stream(app, prepare(app, "fixture:06-processing-comments-gpt4o-mini-partial"))
    evs = events(frames)
    assert texts(frames) == "亚"
    assert evs[-1].name == "error" and evs[-1].json["code"] == "upstream_interrupted"
    assert evs[-1].json["retryable"] is True


def test_recorded_midstream_error(app: LiveApp) -> None:
    evs = events(read_stream(app, prepare(app, "fixture:11-midstream-error-DOCS-EXAMPLE")))
    assert [e.name for e in evs] == ["error"]
    error = evs[0].json
    assert error["code"] == "upstream_error" and error["message"] == "Rate limit exceeded"
    assert error["upstream"]["metadata"] == {"error_type": "rate_limit_exceeded"}


# --- bytes and timing -------------------------------------------------------------


def test_multibyte_characters_split_across_reads(app: LiveApp, fake: fu.FakeUpstream) -> None:
    text = " héllo, wörld 😀 亚 — ok "
    body = b"data: " + fu._dumps(fu.make_chunk(text)) + b"\n\n"
    model = scripted(fake, [fu.Trickle(body, size=1, interval=0.001), *fu.text_chunks([" x\n"])])
    frames = read_stream(app, prepare(app, model))
    assert texts(frames) == text + " x\n"


def test_first_bytes_before_the_upstream_answers(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [fu.Pause(1.5), *fu.text_chunks(["late"])])
    sid = prepare(app, model)
    started = time.monotonic()
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        first = reader.next()
        assert first is not None and first.retry == 3000
        assert time.monotonic() - started < 1.0
        assert reader.status == 200
        assert reader.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert reader.response.headers["Cache-Control"] == "no-cache, no-transform"
        assert reader.response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in reader.response.headers
        reader.until(lambda f: f.name == "done")


def test_heartbeats_while_the_model_thinks(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(
        fake, [fu.Comment(), fu.Pause(0.9), fu.Comment(), fu.Pause(0.9), *fu.text_chunks(["hi"])]
    )
    frames = read_stream(app, prepare(app, model))
    before_first_event = frames[: next(i for i, f in enumerate(frames) if f.name)]
    keep_alives = [f for f in before_first_event if f.comment == "keep-alive"]
    assert len(keep_alives) >= 2
    assert texts(frames) == "hi"


def test_upstream_silence_past_read_timeout(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [fu.Chunk(fu.make_chunk("a")), fu.Hang()])
    sid = prepare(app, model)
    started = time.monotonic()
    evs = events(read_stream(app, sid))
    assert [e.name for e in evs] == ["chunk", "error"]
    assert evs[-1].json["code"] == "upstream_timeout" and evs[-1].json["status"] == 504
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 3


def test_finish_then_silence_still_ends_with_done(app: LiveApp, fake: fu.FakeUpstream) -> None:
    steps = [
        fu.Chunk(fu.make_chunk("a")),
        fu.Chunk(fu.make_chunk("", finish_reason="stop")),
        fu.Hang(),
    ]
    model = scripted(fake, steps)
    started = time.monotonic()
    evs = events(read_stream(app, prepare(app, model)))
    assert evs[-1].name == "done" and evs[-1].json["finishReason"] == "stop"
    assert time.monotonic() - started < READ_TIMEOUT + 1


def test_finish_then_eof_still_ends_with_done(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [*fu.text_chunks(["a"], done=False, usage=None), fu.Abort()])
    evs = events(read_stream(app, prepare(app, model)))
    assert evs[-1].name == "done" and evs[-1].json["usage"] is None


def test_eof_without_finish_is_interrupted(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [fu.Chunk(fu.make_chunk("a")), fu.Abort(reset=True)])
    evs = events(read_stream(app, prepare(app, model)))
    assert [e.name for e in evs] == ["chunk", "error"]
    assert evs[-1].json["code"] == "upstream_interrupted"


@pytest.mark.parametrize(
    ("respond", "code", "status"),
    [
        (
            fu.error_response(429, "slow down", headers={"Retry-After": "7"}),
            "upstream_rate_limited",
            429,
        ),
        (fu.error_response(400, "x is not a valid model ID"), "upstream_bad_request", 400),
        (fu.error_response(402, "more credits"), "insufficient_credits", 402),
        (
            fu.error_response(403, "flagged", metadata={"reasons": ["violence"]}),
            "content_blocked",
            403,
        ),
        (fu.error_response(408, "timeout"), "upstream_timeout", 504),
        (fu.html_error(502), "upstream_unavailable", 502),
        (fu.error_response(503, "no provider"), "upstream_unavailable", 502),
    ],
)
def test_upstream_refusals(
    app: LiveApp, fake: fu.FakeUpstream, respond: t.Any, code: str, status: int
) -> None:
    evs = events(read_stream(app, prepare(app, scripted(fake, [respond]))))
    assert [(e.id, e.name) for e in evs] == [("1", "error")]
    assert evs[0].json["code"] == code and evs[0].json["status"] == status
    assert "<html" not in evs[0].json["message"].lower()


def test_upstream_unreachable(fake: fu.FakeUpstream) -> None:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": f"http://127.0.0.1:{free_port()}/api/v1",
    }
    with LiveApp(env) as live:
        evs = events(read_stream(live, prepare(live, "any/model")))
        assert evs[0].json["code"] == "upstream_unavailable"
        assert evs[0].json["retryable"] is True
        models = requests.get(live.url("/models"), timeout=5)
        assert models.status_code == 502
        assert models.json()["error"]["code"] == "upstream_unavailable"


# --- sessions: resume, fan-out, cancel, abandon ------------------------------------------


def slow_answer(fake: fu.FakeUpstream, words: int = 12, interval: float = 0.05) -> tuple[str, str]:
    pieces = [f"w{i} " for i in range(words)]
    return scripted(fake, fu.text_chunks(pieces, interval=interval)), "".join(pieces)


def test_resume_with_last_event_id(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, expected = slow_answer(fake)
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as first:
        seen = [first.until(lambda f: f.name == "chunk") for _ in range(3)]
    last = seen[-1].id
    assert last == "3"
    with StreamReader(app.url(f"/stream/{sid}"), headers={"Last-Event-ID": last}) as second:
        rest = [f for f in second.read_all() if f.name]
    ids = [int(f.id) for f in seen + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert texts(seen + rest) == expected
    assert len(fake.chat_requests(model)) == 1
    after_end = requests.get(app.url(f"/stream/{sid}?lastEventId={ids[-1]}"), timeout=5)
    assert after_end.status_code == 204


def test_fan_out_one_upstream_request(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, expected = slow_answer(fake)
    sid = prepare(app, model)
    results: list[list[Frame]] = []

    def reader() -> None:
        results.append(events(read_stream(app, sid)))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(results) == 3
    assert all(
        [(e.id, e.name, e.data) for e in r] == [(e.id, e.name, e.data) for e in results[0]]
        for r in results
    )
    assert texts(results[0]) == expected
    assert len(fake.chat_requests(model)) == 1


def test_delete_closes_upstream_within_a_second(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, [fu.Chunk(fu.make_chunk("partial")), fu.Hang()])
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        reader.until(lambda f: f.name == "chunk")
        upstream_request = fake.wait_for_request(model)
        deleted_at = time.monotonic()
        assert requests.delete(app.url(f"/stream/{sid}"), timeout=5).status_code == 204
        done = reader.until(lambda f: f.name in {"done", "error"})
        assert reader.next() is None  # the response ends after the terminal event
    assert done.name == "done" and done.json["finishReason"] == "cancelled"
    closed_at = fake.wait_closed(upstream_request, timeout=3)
    assert closed_at - deleted_at < 1.0


def test_delete_before_get_makes_no_upstream_request(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, fu.text_chunks(["never"]))
    sid = prepare(app, model)
    assert requests.delete(app.url(f"/stream/{sid}"), timeout=5).status_code == 204
    evs = events(read_stream(app, sid))
    assert [e.name for e in evs] == ["done"] and evs[0].json["finishReason"] == "cancelled"
    assert fake.chat_requests(model) == []


def test_abandoned_generation_is_closed(app: LiveApp, fake: fu.FakeUpstream) -> None:
    # a model that keeps talking (so no read timeout interferes) for a minute
    model = scripted(fake, fu.text_chunks(["tok "] * 200, interval=0.3))
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        reader.until(lambda f: f.name == "chunk")
    left_at = time.monotonic()
    upstream_request = fake.wait_for_request(model)
    # the departure is seen at the next heartbeat write, then abandon runs its course
    closed_at = fake.wait_closed(upstream_request, timeout=HEARTBEAT * 2 + ABANDON + 3)
    assert ABANDON <= closed_at - left_at < HEARTBEAT * 2 + ABANDON + 1.0
    # a late reader finds the log ended, not hanging
    evs = events(read_stream(app, sid))
    assert evs[-1].name == "done" and evs[-1].json["finishReason"] == "cancelled"


def test_generation_survives_a_short_absence(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, expected = slow_answer(fake, words=30, interval=0.05)
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        reader.until(lambda f: f.name == "chunk")
    frames = read_stream(app, sid)  # back well within NGAI_ABANDON_TIMEOUT
    assert texts(frames) == expected and events(frames)[-1].name == "done"


# --- headers and secrets ----------------------------------------------------------------


def test_upstream_request_headers(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, fu.text_chunks(["ok"]))
    read_stream(app, prepare(app, model, Origin="https://frontend.example"))
    sent = fake.wait_for_request(model)
    assert sent.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["HTTP-Referer"] == "https://frontend.example"
    assert sent.headers["X-Title"] == "NGAI Chatbot Backend"
    assert sent.headers["X-OpenRouter-Title"] == "NGAI Chatbot Backend"
    assert sent.json["stream"] is True and sent.json["model"] == model


def test_key_quoted_by_upstream_never_reaches_client_or_log(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    refusal = fu.error_response(
        401, f"Invalid API key {API_KEY}", metadata={"raw": f"key={API_KEY}"}
    )
    model = scripted(fake, [refusal])
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        body_frames = reader.read_all()
    error = events(body_frames)[-1].json
    assert error["code"] == "upstream_unauthorized" and "[redacted]" in error["message"]
    seen = " ".join(f.data or "" for f in body_frames)
    for path in ("/health", "/models", f"/stream/{sid}"):
        seen += requests.get(app.url(path), timeout=5).text
    assert API_KEY not in seen
    assert API_KEY not in app.log_text()


def test_demo_mode_over_http() -> None:
    with LiveApp({"NGAI_DEMO": "1"}) as live:
        health = requests.get(live.url("/health"), timeout=5).json()
        assert health["upstream"] == "demo"
        models = requests.get(live.url("/models"), timeout=5).json()
        assert [m["id"] for m in models["data"]] == ["ngai/demo"]
        sid = prepare(live, "mistralai/mistral-7b-instruct:free", content="Tell me a joke")
        started = time.monotonic()
        frames = read_stream(live, sid)
        elapsed = time.monotonic() - started
        words = len(texts(frames).split())
        assert "Tell me a joke" in texts(frames)
        assert 8 <= words / elapsed <= 40  # about 20 words a second
        assert "Demo mode" in live.log_text() or "demo mode" in live.log_text()


# --- reasoning, citations, cost (issue 10) ---------------------------------------------


def _thinking_answer(fake: fu.FakeUpstream) -> tuple[str, str, str]:
    """A model that reasons, then answers citing a source twice, then reports usage."""
    gen = fu.new_generation_id()

    def step(delta: dict[str, t.Any], **extra: t.Any) -> fu.Chunk:
        value = fu.make_chunk("", gen_id=gen)
        value["choices"][0]["delta"] = {"role": "assistant", "content": "", **delta}
        value.update(extra)
        return fu.Chunk(value)

    cite = {
        "type": "url_citation",
        "url_citation": {"url": "https://src.example/a", "title": "Source A", "content": "x"},
    }
    thoughts = ["Let me ", "think ", "about it."]
    answer = ["The answer ", "is 42", "."]
    steps: list[t.Any] = [
        *(
            step(
                {
                    "reasoning": r,
                    "reasoning_details": [{"type": "reasoning.text", "index": 0, "text": r}],
                }
            )
            for r in thoughts
        ),
        fu.Pause(0.05),
        *(step({"content": a}) for a in answer[:2]),
        step({"content": answer[2], "annotations": [cite]}),
        step({"annotations": [cite]}),
        fu.Chunk(fu.make_chunk("", finish_reason="stop", gen_id=gen)),
        fu.Chunk(
            fu.usage_chunk(
                {
                    "prompt_tokens": 10,
                    "completion_tokens": 20,
                    "total_tokens": 30,
                    "cost": 0.00042,
                    "completion_tokens_details": {"reasoning_tokens": 7},
                },
                gen_id=gen,
            )
        ),
        fu.Done(),
    ]
    return scripted(fake, steps), "".join(thoughts), "".join(answer)


def _check_done(done: dict[str, t.Any], thoughts: str) -> None:
    assert done["finishReason"] == "stop"
    assert done["generationId"].startswith("gen-fake-")
    assert done["citations"] == [
        {"url": "https://src.example/a", "title": "Source A", "content": "x"}
    ]
    assert done["usage"]["cost"] == 0.00042 and done["usage"]["total_tokens"] == 30
    assert done["reasoningDetails"] == [{"type": "reasoning.text", "index": 0, "text": thoughts}]


def test_reasoning_citations_and_cost_are_relayed(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, thoughts, answer = _thinking_answer(fake)
    evs = events(read_stream(app, prepare(app, model)))
    chunks = [e.json for e in evs if e.name == "chunk"]
    assert "".join(c["reasoning"] for c in chunks) == thoughts
    assert "".join(c["content"] for c in chunks) == answer
    first_answer = next(i for i, c in enumerate(chunks) if c["content"])
    assert all(c["reasoning"] for c in chunks[1:first_answer])  # thinking came first
    assert chunks[-1]["choices"] == [] and chunks[-1]["reasoning"] == ""
    assert evs[-1].name == "done"
    _check_done(evs[-1].json, thoughts)


def test_resume_in_the_middle_of_reasoning(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model, thoughts, answer = _thinking_answer(fake)
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as first:
        seen = [first.until(lambda f: f.name == "chunk") for _ in range(2)]
    with StreamReader(app.url(f"/stream/{sid}"), headers={"Last-Event-ID": seen[-1].id}) as again:
        rest = [f for f in again.read_all() if f.name]
    frames = seen + rest
    assert [int(f.id) for f in frames] == list(range(1, len(frames) + 1))
    chunks = [f.json for f in frames if f.name == "chunk"]
    assert "".join(c["reasoning"] for c in chunks) == thoughts
    assert "".join(c["content"] for c in chunks) == answer
    _check_done(frames[-1].json, thoughts)
    assert len(fake.chat_requests(model)) == 1


# --- hostile upstreams and readers (issue 8) ----------------------------------------------


def _escaped(text: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in text)


def test_key_json_escaped_by_upstream_never_reaches_client_or_log(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    gen = fu.new_generation_id()
    quoted = fu.make_chunk("KEY", gen_id=gen)
    body = json.dumps(quoted).replace("KEY", "your key is " + _escaped(API_KEY))
    failure = fu.error_chunk(401, "ERR", gen_id=gen)
    failure["error"]["metadata"] = {"raw": "RAW"}
    failing = (
        json.dumps(failure).replace("ERR", _escaped(API_KEY)).replace("RAW", _escaped(API_KEY))
    )
    model = scripted(fake, [fu.Raw(f"data: {body}\n\n"), fu.Raw(f"data: {failing}\n\n"), fu.Done()])
    frames = read_stream(app, prepare(app, model))
    evs = events(frames)
    assert [e.name for e in evs] == ["chunk", "error"]
    assert evs[0].json["content"] == "your key is [redacted]"
    assert evs[1].json["code"] == "upstream_error"
    raw = "".join(f.data or "" for f in frames)
    for form in (API_KEY, _escaped(API_KEY), json.dumps(API_KEY)):
        assert form not in raw
    assert "[redacted]" in evs[1].json["message"]
    assert API_KEY not in app.log_text() and _escaped(API_KEY) not in app.log_text()


def test_an_event_without_end_is_cut_off_and_stalls_nobody(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    worker = app.worker_pids()[0]
    before = vm_rss_kib(worker)
    block = b"x" * 65536
    endless = [fu.Begin(), fu.Raw(b"data: "), *(fu.Raw(block) for _ in range(160)), fu.Hang()]
    model = scripted(fake, endless)  # 10 MB and counting, no line break
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as reader:
        error = reader.until(lambda f: f.name in ("error", "done"))
        started = time.monotonic()
        health = requests.get(app.url("/health"), timeout=5)
        assert health.status_code == 200 and time.monotonic() - started < 1.0
    assert error.name == "error" and error.json["code"] == "upstream_error"
    assert "NGAI_MAX_EVENT_BYTES" in error.json["message"]
    assert vm_rss_kib(worker) - before < 20_000  # the 1 MiB limit, not the 10 MB sent


def test_last_event_id_past_a_live_log_ends_with_the_log(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    model, _ = slow_answer(fake, words=10, interval=0.05)
    sid = prepare(app, model)
    with StreamReader(app.url(f"/stream/{sid}")) as first:
        first.until(lambda f: f.name == "chunk")  # running now
        started = time.monotonic()
        with StreamReader(
            app.url(f"/stream/{sid}"), headers={"Last-Event-ID": "1000"}, timeout=5
        ) as past:
            frames = past.read_all()
        waited = time.monotonic() - started
        assert first.until(lambda f: f.name == "done")
    assert [f for f in frames if f.name] == []  # nothing to send, then the end
    assert waited < 3.0  # the log ended within a second or so; not the replay TTL


def test_readers_that_never_read_a_long_log_cost_a_bounded_amount(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    piece = "y" * 8000
    model = scripted(fake, fu.text_chunks([piece] * 600))  # ~9.6 MB of event data
    sid = prepare(app, model)
    assert texts(read_stream(app, sid)) == piece * 600  # the log is finished
    worker = app.worker_pids()[0]
    before = vm_rss_kib(worker)
    with readers_that_never_read(app, f"/stream/{sid}", 100):
        grown = vm_rss_kib(worker) - before
        assert requests.get(app.url("/health"), timeout=5).status_code == 200
    print(f"worker grew {grown} KiB for 100 readers")
    # before: every reader joined its whole backlog (+7 MiB each, 700 MB here)
    assert grown < 100 * 512, f"{grown} KiB for 100 readers"
