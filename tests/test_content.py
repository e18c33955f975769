"""Issue 16 end to end: what today's models send and take, through gunicorn on
loopback, on the memory store and on Redis.

Generated images of several MB in one event, tool calls in fragments, attachments
as content parts, the limits on them (``NGAI_MAX_EVENT_BYTES``,
``NGAI_MAX_CLIENT_BYTES``), and the demo model that shows all of it offline.
"""

from __future__ import annotations

import base64
import json
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import readers_that_never_read
from bench.live import vm_rss_kib
from ngai_chat.doors import ngai
from ngai_chat.doors.base import HEARTBEAT
from ngai_chat.doors.base import SLICE_BYTES
from ngai_chat.store import Event
from tests.conftest import API_KEY
from tests.support.redis_server import RedisServer
from tests.support.sse_parse import Frame
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import texts

pytestmark = pytest.mark.live

#: the longest upstream event the app under test takes
MAX_EVENT = 4 * 1024 * 1024
#: what one client's unfinished sessions may hold
MAX_CLIENT = 8 * 1024 * 1024
MAIN, BYTES = "t-main", "t-bytes"


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def app(request: pytest.FixtureRequest, fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_API_TOKENS": f"{MAIN},{BYTES}",
        "NGAI_MAX_EVENT_BYTES": str(MAX_EVENT),
        "NGAI_MAX_CLIENT_BYTES": str(MAX_CLIENT),
        "NGAI_HEARTBEAT_INTERVAL": "1",
    }
    if request.param == "memory":
        with LiveApp(env) as live:
            yield live
        return
    with RedisServer() as redis:
        env["REDIS_URL"] = redis.url
        with LiveApp(env) as live:
            yield live


def _auth(token: str = MAIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def prepare(app: LiveApp, body: dict[str, t.Any], token: str = MAIN) -> requests.Response:
    return requests.post(app.url("/prepare"), json=body, headers=_auth(token), timeout=10)


def session(app: LiveApp, model: str, content: t.Any = "Hello", **extra: t.Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    response = prepare(app, body)
    assert response.status_code == 200, response.text
    return str(response.json()["sessionId"])


def read_stream(app: LiveApp, sid: str, **headers: str) -> list[Frame]:
    with StreamReader(app.url(f"/stream/{sid}"), headers=headers, timeout=20) as reader:
        assert reader.status == 200
        return reader.read_all()


def _event_bytes(chunk: dict[str, t.Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def image_model(fake: fu.FakeUpstream, url: str) -> str:
    """A model that says a word, sends ``url`` as a generated image in one event
    (in 64 KiB writes, as a CDN passes it on), calls a tool, and finishes.
    """
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(
        model,
        [
            fu.make_chunk("Here: "),
            fu.Trickle(_event_bytes(fu.image_chunk(url)), size=65536, interval=0),
            *fu.tool_call_chunks("save_image", '{"name": "Zürich 😀"}', pieces=5),
            fu.usage_chunk(),
            fu.Done(),
        ],
    )
    return model


def test_a_3_mb_image_arrives_whole_with_the_tool_call(app: LiveApp, fake: fu.FakeUpstream) -> None:
    url = fu.data_url(3 * 1024 * 1024)
    frames = read_stream(app, session(app, image_model(fake, url)))
    evs = events(frames)
    images = [
        image
        for e in evs
        if e.name == "chunk" and e.json["choices"]
        for image in e.json["choices"][0]["delta"].get("images", [])
    ]
    assert [image["image_url"]["url"] for image in images] == [url]
    assert texts(frames) == "Here: "
    done = evs[-1]
    assert done.name == "done" and done.json["finishReason"] == "tool_calls"
    assert done.json["toolCalls"] == [
        {
            "id": "call_fake_0",
            "type": "function",
            "function": {"name": "save_image", "arguments": '{"name": "Zürich 😀"}'},
        }
    ]


def test_a_resumed_stream_replays_the_missed_image_whole(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    url = fu.data_url(3 * 1024 * 1024, seed=2)
    sid = session(app, image_model(fake, url))
    first = events(read_stream(app, sid))
    image_id = next(e.id for e in first if e.name == "chunk" and "images" in e.data)  # type: ignore[operator]
    resumed = events(read_stream(app, sid, **{"Last-Event-ID": str(int(image_id) - 1)}))  # type: ignore[arg-type]
    assert resumed[0].id == image_id
    assert resumed[0].json["choices"][0]["delta"]["images"][0]["image_url"]["url"] == url
    assert [e.data for e in resumed] == [e.data for e in first[int(image_id) - 1 :]]  # type: ignore[arg-type]


def test_readers_that_never_read_a_log_of_images_stay_bounded(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    # 30 readers of a log with a 3 MB image, none reading: a copy per reader would
    # be 90 MB; each holds a slice and its socket buffers
    sid = session(app, image_model(fake, fu.data_url(3 * 1024 * 1024, seed=3)))
    read_stream(app, sid)  # the log is whole and finished
    (pid,) = app.worker_pids()
    before = vm_rss_kib(pid)
    with readers_that_never_read(app, f"/stream/{sid}", 30):
        held = vm_rss_kib(pid)
    assert held - before < 12 * 1024, f"RSS grew by {held - before} KiB for 30 readers"


def test_an_event_over_the_limit_ends_the_stream_not_retryable(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    model = f"test/{uuid.uuid4().hex[:12]}"
    too_big = _event_bytes(fu.image_chunk(fu.data_url(MAX_EVENT + 100_000)))
    fake.script(model, [fu.make_chunk("a"), fu.Trickle(too_big, size=65536, interval=0)])
    evs = events(read_stream(app, session(app, model)))
    assert [e.name for e in evs] == ["chunk", "error"]
    error = evs[-1].json
    assert error["code"] == "upstream_error" and error["retryable"] is False
    assert "NGAI_MAX_EVENT_BYTES" in error["message"]


def test_a_photo_and_a_pdf_go_upstream_as_sent(app: LiveApp, fake: fu.FakeUpstream) -> None:
    photo = fu.data_url(4 * 1024 * 1024, "image/jpeg")
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n%%EOF").decode()
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": photo}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}},
    ]
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(model, fu.text_chunks(["ok"]))
    frames = read_stream(app, session(app, model, parts))
    assert texts(frames) == "ok"
    sent = fake.wait_for_request(model)
    assert sent.json["messages"][0]["content"] == parts


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}},
         "messages[0].content[1].image_url.url"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
         "messages[0].content[1].image_url.url"),
        ({"type": "file",
          "file": {"filename": "a.exe", "file_data": "data:application/x-msdownload;base64,TVo="}},
         "messages[0].content[1].file.file_data"),
        ({"type": "video", "video": {}}, "messages[0].content[1].type"),
    ],
)  # fmt: skip
def test_bad_parts_are_a_400_naming_the_field(
    app: LiveApp, part: dict[str, t.Any], field: str
) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]}
    response = prepare(app, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field


def test_a_client_holding_too_many_bytes_gets_429(app: LiveApp) -> None:
    photo = fu.data_url(3 * 1024 * 1024, "image/jpeg")
    body = {
        "model": "echo",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": photo}}]}
        ],
    }
    held = []
    for _ in range(2):  # 6 MB of 8
        response = prepare(app, body, BYTES)
        assert response.status_code == 200, response.text
        held.append(response.json()["sessionId"])
    refused = prepare(app, body, BYTES)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "NGAI_MAX_CLIENT_BYTES" in error["message"]
    assert int(refused.headers["Retry-After"]) == error["retryAfter"] > 0
    # another client is not affected
    assert prepare(app, {"messages": [{"role": "user", "content": "Hi"}]}).status_code == 200
    # an ended session (cancelled before any GET) gives its bytes back
    cancelled = requests.delete(app.url(f"/stream/{held[0]}"), headers=_auth(BYTES), timeout=5)
    assert cancelled.status_code == 204
    again = prepare(app, body, BYTES)
    assert again.status_code == 200, again.text
    for sid in (held[1], again.json()["sessionId"]):
        requests.delete(app.url(f"/stream/{sid}"), headers=_auth(BYTES), timeout=5)


# --- bounded writes of a big frame (doors/ngai.py) --------------------------------------


class _Reader:
    """Stands in for a relay reader: the batches of events it was given."""

    def __init__(self, *batches: list[Event] | None) -> None:
        self.batches = batches
        self.after = 0

    def __iter__(self) -> t.Iterator[list[Event] | None]:
        return iter(self.batches)


def test_a_big_frame_goes_out_in_bounded_slices_of_the_one_copy() -> None:
    image = Event(2, "chunk", json.dumps({"url": fu.data_url(3 * 1024 * 1024)}))
    small = [Event(1, "chunk", '{"content":"a"}'), Event(3, "chunk", '{"content":"b"}')]
    reader = _Reader([small[0], image, small[1]], None)
    writes = list(ngai._frames(reader))  # type: ignore[arg-type]
    assert writes[0].startswith(b"retry: ")
    body = writes[1:]
    assert max(len(w) for w in body) <= SLICE_BYTES
    assert len(body) >= 3 * 1024 * 1024 // SLICE_BYTES
    assert b"".join(body) == small[0].frame + image.frame + small[1].frame + HEARTBEAT
    assert all(type(w) is bytes for w in writes)  # what gunicorn's write takes


# --- the demo model, served (NGAI_DEMO=1) ---------------------------------------------


@pytest.fixture(scope="module")
def demo() -> t.Iterator[LiveApp]:
    with LiveApp({"NGAI_DEMO": "1"}) as live:
        yield live


def _demo_events(app: LiveApp, content: t.Any, **extra: t.Any) -> list[Frame]:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    response = requests.post(app.url("/prepare"), json=body, timeout=10)
    assert response.status_code == 200, response.text
    return events(read_stream(app, response.json()["sessionId"]))


def test_the_demo_draws_calls_tools_and_names_attachments(demo: LiveApp) -> None:
    drawn = _demo_events(demo, "Draw a boat")
    urls = [
        image["image_url"]["url"]
        for e in drawn
        if e.name == "chunk" and e.json["choices"]
        for image in e.json["choices"][0]["delta"].get("images", [])
    ]
    assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")
    assert base64.b64decode(urls[0].split(",", 1)[1], validate=True)[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn[-1].json["finishReason"] == "stop"

    tool = {"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }}  # fmt: skip
    called = _demo_events(demo, "Find it", tools=[tool])
    done = called[-1].json
    assert done["finishReason"] == "tool_calls"
    (call,) = done["toolCalls"]
    assert call["function"] == {"name": "lookup", "arguments": '{"q": "Find it"}'}
    assert sum(1 for e in called if e.name == "chunk" and '"tool_calls"' in e.data) >= 3  # type: ignore[operator]

    pdf = "data:application/pdf;base64," + base64.b64encode(bytes(3000)).decode()
    parts = [{"type": "text", "text": "Read"},
             {"type": "file", "file": {"filename": "r.pdf", "file_data": pdf}}]  # fmt: skip
    named = texts(_demo_events(demo, parts))
    assert 'You attached a file "r.pdf" (application/pdf, 2.9 KB).' in named


@pytest.mark.redis
def test_an_image_generated_on_one_instance_is_read_whole_on_another(
    fake: fu.FakeUpstream,
) -> None:
    # the image goes through Redis (XADD, then the other instance's tail), and a
    # resume on the second instance replays it whole
    url = fu.data_url(3 * 1024 * 1024, seed=4)
    with RedisServer() as redis:
        env = {
            "OPENROUTER_API_KEY": API_KEY,
            "OPENROUTER_BASE_URL": fake.base_url,
            "REDIS_URL": redis.url,
            "NGAI_HEARTBEAT_INTERVAL": "1",
        }
        first, second = LiveApp(env), LiveApp(env)
        try:
            first.start(timeout=60)  # two at once start slowly on a busy machine
            second.start(timeout=60)
            model = image_model(fake, url)
            body = {"model": model, "messages": [{"role": "user", "content": "draw"}]}
            sid = requests.post(first.url("/prepare"), json=body, timeout=10).json()["sessionId"]
            with StreamReader(first.url(f"/stream/{sid}"), timeout=20) as generating:
                generating.until(lambda f: f.name == "chunk")  # the generation runs on `first`
                elsewhere = events(read_stream(second, sid))
                mine = events(generating.read_all())
            assert [e.data for e in elsewhere] == [e.data for e in mine]
            image = next(e for e in elsewhere if e.name == "chunk" and "images" in (e.data or ""))
            assert image.json["choices"][0]["delta"]["images"][0]["image_url"]["url"] == url
            after = str(int(image.id or 0) - 1)
            resumed = events(read_stream(second, sid, **{"Last-Event-ID": after}))
            assert resumed[0].data == image.data and resumed[-1].name == "done"
        finally:
            first.close()
            second.close()
