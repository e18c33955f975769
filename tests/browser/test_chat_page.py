"""The chat page (SPEC §3 ``GET /``) in a real headless Chromium.

The app runs as in production (gunicorn + gevent, :class:`~bench.live.LiveApp`)
and relays from the fake upstream on 127.0.0.1; the browser drives the page the way a
person does: it picks a model, types, presses Enter or Stop. The page talks to the API
only through ``ngai-client.js``, so these tests hold the client to its promises too:
text streamed incrementally and exactly, the conversation sent back, Stop closing the
upstream, server error events shown, a dropped connection resumed without repeats.

No sleeps: every wait is a WebDriverWait (or a fake-upstream wait) with a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import typing as t

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from bench.live import free_port
from tests.browser.pages import enabled
from tests.browser.pages import last_reply
from tests.browser.pages import open_page
from tests.browser.pages import send
from tests.browser.pages import serve
from tests.browser.pages import wait
from tests.browser.pages import wait_finished

pytestmark = [pytest.mark.browser, pytest.mark.live]

ARTIFACTS = ROOT / "test-artifacts"

#: models scripted by these tests, listed by the fake's ``/models`` as free ones
SLOW = "test/slow"
STOP = "test/stop"
ESCAPE = "test/escape"
RATE_LIMITED = "test/rate-limited"
MIDSTREAM = "test/midstream-error"
RECONNECT = "test/reconnect"
FAST = "test/fast"

#: the slow answer: multi-byte characters, a newline and doubled spaces come back exactly
SLOW_PIECES = [
    "Streaming ",
    "answers ",
    "arrive ",
    "piece ",
    "by ",
    "piece: ",
    "naïve ",
    "café, ",
    "✓ check,\n",
    "a new line, ",
    " two  spaces, ",
    "done.",
]
SLOW_TEXT = "".join(SLOW_PIECES)
RECONNECT_PIECES = [f"r{n} " for n in range(1, 41)]
RECONNECT_TEXT = "".join(RECONNECT_PIECES)


def _free(model_id: str) -> dict[str, t.Any]:
    return {"id": model_id, "name": model_id, "pricing": {"prompt": "0", "completion": "0"}}


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> t.Iterator[fu.FakeUpstream]:
    with fu.FakeUpstream() as server:
        server.models["data"].extend(
            _free(m) for m in (SLOW, STOP, ESCAPE, RATE_LIMITED, MIDSTREAM, RECONNECT, FAST)
        )
        server.script(SLOW, fu.text_chunks(SLOW_PIECES, model=SLOW, interval=0.25))
        counting = [f"s{n} " for n in range(200)]
        server.script(STOP, fu.text_chunks(counting, interval=0.1))
        server.script(ESCAPE, fu.text_chunks(counting, interval=0.1))
        server.script(RATE_LIMITED, [fu.error_response(429)])
        server.script(
            MIDSTREAM,
            [
                *fu.text_chunks(["Half ", "an answer"], finish_reason=None, usage=None, done=False),
                fu.Chunk(fu.error_chunk(502, "Provider returned error: the model is overloaded")),
            ],
        )
        server.script(RECONNECT, fu.text_chunks(RECONNECT_PIECES, interval=0.1))
        server.script(FAST, fu.text_chunks(["Mounted ", "under ", "a prefix."]))
        yield server


def _settings(fake: fu.FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_API_KEY": "test-key",
        # a gone reader is noticed within a heartbeat; the generation outlives it
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
        "NGAI_ABANDON_TIMEOUT": "30",
        # open streams must not hold the test run's teardown for two minutes
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
        **extra,
    }


@pytest.fixture(scope="module")
def app(driver: t.Any, fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    with serve(driver, _settings(fake)) as live:
        yield live


# -- a network that can drop -----------------------------------------------------------


class DroppingProxy:
    """A TCP proxy between the browser and the app whose connections can be cut.

    :meth:`drop` resets every open connection, as a lost network would, and holds new
    ones unanswered until :meth:`restore`, as a network that is still down would.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name="dropping-proxy", daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def drop(self) -> None:
        """Reset every open connection and hold new ones."""
        self._up.clear()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    # a zero linger makes close() send RST: the browser sees a network error
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        """Let held and new connections through."""
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop()
        self._up.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._up.wait()
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        with self._lock:
            if self._closed:
                client.close()
                server.close()
                return
            self._open.update((client, server))
            self.connections += 1
        back = threading.Thread(target=self._pipe, args=(server, client), daemon=True)
        back.start()
        self._pipe(client, server)
        back.join()
        with self._lock:
            self._open.difference_update((client, server))
        client.close()
        server.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


# -- tests ---------------------------------------------------------------------------


def test_answer_streams_in_incrementally_and_exactly_and_history_is_sent(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), SLOW)
    assert driver.find_element(By.CSS_SELECTOR, "label[for=model]").text == "Model"
    assert driver.find_element(By.CSS_SELECTOR, "label[for=prompt]").text == "Message"
    log = driver.find_element(By.ID, "log")
    assert (log.get_attribute("role"), log.get_attribute("aria-live")) == ("log", "polite")
    assert not enabled(driver, "stop")

    send(driver, "Tell me", "about streams.")

    partial: set[int] = set()

    def streaming_done(d: t.Any) -> dict[str, t.Any] | None:
        reply = last_reply(d)
        if reply["state"] == "streaming":
            assert SLOW_TEXT.startswith(reply["text"]), reply["text"]
            if 0 < len(reply["text"]) < len(SLOW_TEXT):
                partial.add(len(reply["text"]))
                assert reply["stopEnabled"] and not reply["sendEnabled"], reply
            return None
        return reply

    reply = wait(driver, 15).until(streaming_done)
    assert len(partial) >= 2, f"the answer did not appear piece by piece: {partial}"
    assert reply["state"] == "done", reply
    assert reply["text"] == SLOW_TEXT
    assert reply["status"].startswith("Done")
    user = driver.find_element(By.CSS_SELECTOR, ".msg.user .text").get_attribute("textContent")
    assert user == "Tell me\nabout streams."
    assert enabled(driver, "send") and not enabled(driver, "stop")

    # The second turn carries the whole conversation.
    send(driver, "And once more?")
    second = wait_finished(driver, 2)
    assert (second["state"], second["text"]) == ("done", SLOW_TEXT)
    requests = fake.chat_requests(SLOW)
    assert len(requests) == 2
    assert requests[1].json["messages"] == [
        {"role": "user", "content": "Tell me\nabout streams."},
        {"role": "assistant", "content": SLOW_TEXT},
        {"role": "user", "content": "And once more?"},
    ]

    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "chat.png"))


def test_stop_cancels_the_generation_and_closes_the_upstream(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), STOP)
    send(driver, "Count for a long time.")
    wait(driver).until(lambda d: len(last_reply(d)["text"]) >= len("s0 s1 s2 "))
    request = fake.wait_for_request(STOP)

    stop = driver.find_element(By.ID, "stop")
    clicked = time.monotonic()
    stop.click()
    closed_at = fake.wait_closed(request, timeout=5)
    assert closed_at - clicked < 2.0, "the upstream stayed open after Stop"

    reply = wait_finished(driver, 1)
    assert reply["state"] == "cancelled"
    assert reply["status"] == "Stopped."
    assert "Stopped." in reply["notes"]
    full = "".join(f"s{n} " for n in range(200))
    assert reply["text"] and full.startswith(reply["text"]) and reply["text"] != full
    assert not enabled(driver, "stop")
    # Focus leaves the disabled Stop button for the message box.
    assert driver.switch_to.active_element.get_attribute("id") == "prompt"
    assert len(fake.chat_requests(STOP)) == 1


@pytest.mark.parametrize(
    ("model", "message", "partial"),
    [
        pytest.param(RATE_LIMITED, "Rate limit exceeded: free-models-per-min.", "", id="429"),
        pytest.param(
            MIDSTREAM,
            "Provider returned error: the model is overloaded",
            "Half an answer",
            id="midstream",
        ),
    ],
)
def test_upstream_errors_show_their_message(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream, model: str, message: str, partial: str
) -> None:
    open_page(driver, app.url("/"), model)
    send(driver, "Hello?")
    reply = wait_finished(driver, 1)
    assert reply["state"] == "error", reply
    assert reply["text"] == partial
    assert message in reply["notes"]
    assert "try again" in reply["notes"]  # both are retryable
    assert reply["status"] == f"Error: {message}"
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("data-kind") == "error"
    # The failed message goes back into the box, ready to be sent again.
    prompt = driver.find_element(By.ID, "prompt")
    assert prompt.get_attribute("value") == "Hello?"
    assert enabled(driver, "send") and not enabled(driver, "stop")


def test_dropped_connection_resumes_without_gaps_or_repeats(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    proxy = DroppingProxy(app.port)
    try:
        open_page(driver, proxy.url("/"), RECONNECT)
        send(driver, "Keep going.")
        wait(driver).until(lambda d: "r6 " in last_reply(d)["text"])

        proxy.drop()
        held = wait(driver).until(
            lambda d: (r := last_reply(d))["status"].startswith("Reconnecting") and r
        )
        assert held["state"] == "streaming"
        assert RECONNECT_TEXT.startswith(held["text"])
        proxy.restore()

        reply = wait_finished(driver, 1, timeout=20)
    finally:
        proxy.close()
    assert reply["state"] == "done", reply
    assert reply["text"] == RECONNECT_TEXT
    assert reply["status"].startswith("Done")
    # The relay asked the upstream once; the browser's resume was served from the log.
    assert len(fake.chat_requests(RECONNECT)) == 1


def test_keyboard_escape_stops_and_new_chat_forgets_the_conversation(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), ESCAPE)
    send(driver, "Count again.")
    wait(driver).until(lambda d: last_reply(d)["text"].startswith("s0 s1 "))
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert wait_finished(driver, 1)["state"] == "cancelled"

    driver.find_element(By.ID, "new-chat").click()
    assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
    assert driver.switch_to.active_element.get_attribute("id") == "prompt"
    Select(driver.find_element(By.ID, "model")).select_by_value(FAST)
    send(driver, "A fresh start.")
    assert wait_finished(driver, 1)["text"] == "Mounted under a prefix."
    last = fake.chat_requests(FAST)[-1]
    assert last.json["messages"] == [{"role": "user", "content": "A fresh start."}]


def test_page_works_under_a_prefix(driver: t.Any, fake: fu.FakeUpstream) -> None:
    with serve(driver, _settings(fake), app_spec="tests.support.hostapp:app") as host:
        open_page(driver, host.url("/api/chat/"), FAST)
        api_base = driver.find_element(By.CSS_SELECTOR, "meta[name=ngai-api-base]")
        assert api_base.get_attribute("content") == "/api/chat"
        send(driver, "Where are you?")
        reply = wait_finished(driver, 1)
        assert (reply["state"], reply["text"]) == ("done", "Mounted under a prefix.")
        paths = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)"
        )
    assert "/api/chat/static/chat.js" in paths
    assert "/api/chat/static/ngai-client.js" in paths
    assert "/api/chat/prepare" in paths
    assert all(path.startswith("/api/chat/") for path in paths), paths


def test_model_list_failure_falls_back_and_upstream_down_is_explained(driver: t.Any) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api/v1"
    env = {"OPENROUTER_BASE_URL": nowhere, "OPENROUTER_API_KEY": "test-key"}
    env["GUNICORN_GRACEFUL_TIMEOUT"] = "3"
    with serve(driver, env) as down:
        open_page(driver, down.url("/"))
        status = driver.find_element(By.ID, "status").text
        assert status.startswith("Could not load the model list")
        assert "mistralai/mistral-7b-instruct:free" in status
        picker = Select(driver.find_element(By.ID, "model"))
        assert picker.first_selected_option.get_attribute("value") == (
            "mistralai/mistral-7b-instruct:free"
        )
        send(driver, "Anyone there?")
        reply = wait_finished(driver, 1)
    assert reply["state"] == "error", reply
    assert reply["status"].startswith("Error: ")
    assert len(reply["status"]) > len("Error: ") + 10
