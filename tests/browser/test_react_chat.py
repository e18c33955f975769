"""examples/react-chat, a Vite + React app on the AI SDK's ``useChat``, built from its
lock file and driven in Chromium against gunicorn + gevent relaying the fake upstream:
an answer streams (thinking, sources, a tool call, an image), a reload mid-answer
resumes it with nothing twice, Stop closes the upstream within a second, attachments
go upstream as content parts, and the offline demo model works through it.

Needs ``npm ci --prefix examples/react-chat`` (``make test`` runs it); the app is
built here, into a temporary directory, and served by a static file server.
"""

from __future__ import annotations

import base64
import functools
import http.server
import shutil
import subprocess
import threading
import time
import typing as t
import urllib.parse
import uuid
from pathlib import Path

import pytest

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from tests.conftest import API_KEY
from tests.support import rich_answer as rich
from tests.support.helpers import wait_until

pytestmark = pytest.mark.live

EXAMPLE = ROOT / "examples" / "react-chat"
WAIT = 15.0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    """The example, built with its own Vite and served on 127.0.0.1."""
    npm = shutil.which("npm")
    if npm is None or not (EXAMPLE / "node_modules" / ".package-lock.json").is_file():
        pytest.fail(
            "examples/react-chat/node_modules is missing: run `npm ci --prefix "
            "examples/react-chat` (make test does)"
        )
    out = tmp_path_factory.mktemp("react-chat-dist")
    build = subprocess.run(
        [npm, "run", "build", "--", "--outDir", str(out), "--emptyOutDir"],
        cwd=EXAMPLE,
        capture_output=True,
        encoding="utf-8",
        timeout=180,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (out / "index.html").is_file()
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: t.Any) -> None:
        pass


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
        "NGAI_ABANDON_TIMEOUT": "10",
        "NGAI_UPSTREAM_READ_TIMEOUT": "10",
    }
    with LiveApp(env) as live:
        yield live


def open_chat(driver: t.Any, site: str, api: str, model: str | None = None) -> None:
    """The example on a new chat (nothing saved from an earlier test)."""
    query = {"api": api, **({"model": model} if model else {})}
    driver.get(f"{site}/?{urllib.parse.urlencode(query)}")
    driver.execute_script("localStorage.clear()")
    driver.refresh()
    wait_until(lambda: status(driver) == "ready", WAIT, "the page to load")


def status(driver: t.Any) -> str | None:
    return t.cast(
        "str | None",
        driver.execute_script(
            "const s = document.getElementById('status'); return s && s.dataset.status"
        ),
    )


def messages(driver: t.Any) -> list[dict[str, t.Any]]:
    """What the page shows, message by message."""
    return t.cast(
        "list[dict[str, t.Any]]",
        driver.execute_script(
            """
            const all = (root, sel, f) => Array.from(root.querySelectorAll(sel)).map(f);
            return all(document, 'article.message', (a) => ({
              role: a.dataset.role,
              text: all(a, '.text', (e) => e.textContent).join(''),
              reasoning: all(a, '.reasoning-text', (e) => e.textContent).join(''),
              sources: all(a, 'a.source', (e) => [e.getAttribute('href'), e.textContent]),
              tools: all(a, '.tool', (e) => [e.textContent, e.dataset.state]),
              images: all(a, 'img.image', (e) => e.getAttribute('src')),
            }));
            """
        ),
    )


def answer(driver: t.Any) -> dict[str, t.Any]:
    found = [m for m in messages(driver) if m["role"] == "assistant"]
    return found[-1] if found else {"text": ""}


def send(driver: t.Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "input").send_keys(text)
    driver.find_element(By.ID, "send").click()


def scripted(fake: fu.FakeUpstream, steps: t.Any) -> str:
    model = f"react/{uuid.uuid4().hex[:12]}"
    fake.script(model, steps)
    return model


def test_answer_streams_with_thinking_sources_tool_and_image(
    driver: t.Any, site: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    model = scripted(fake, rich.steps(interval=0.15))
    open_chat(driver, site, app.base_url, model)
    send(driver, "Weather in Paris?")
    full = "".join(rich.ANSWER)
    partial = wait_until(lambda: answer(driver)["text"] or None, WAIT, "the first words")
    assert full.startswith(partial) and partial != full  # seen while it streams
    wait_until(lambda: status(driver) == "ready", WAIT, "the answer to finish")
    shown = messages(driver)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[0]["text"] == "Weather in Paris?"
    reply = shown[1]
    assert reply["text"] == full
    assert reply["reasoning"] == "".join(rich.THOUGHTS)
    assert reply["sources"] == [[rich.SOURCE["url"], rich.SOURCE["title"]]]
    assert reply["tools"] == [['weather({"city":"Paris"})', "input-available"]]
    assert reply["images"] == [rich.IMAGE]


def test_reload_mid_answer_resumes_with_nothing_twice(
    driver: t.Any, site: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    pieces = [f"wörd{i} " for i in range(50)]
    model = scripted(fake, fu.text_chunks(pieces, interval=0.1))
    open_chat(driver, site, app.base_url, model)
    send(driver, "Count")
    wait_until(lambda: len(answer(driver)["text"].split()) >= 3, WAIT, "a few words")
    driver.refresh()  # mid-answer
    seen = wait_until(lambda: answer(driver)["text"] or None, WAIT, "the resumed answer")
    assert "".join(pieces).startswith(seen)
    wait_until(lambda: status(driver) == "ready", WAIT, "the answer to finish")
    shown = messages(driver)
    assert [m["role"] for m in shown] == ["user", "assistant"]
    assert shown[1]["text"] == "".join(pieces)
    assert len(fake.chat_requests(model)) == 1


def test_stop_closes_the_upstream_within_a_second(
    driver: t.Any, site: str, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    from selenium.webdriver.common.by import By

    model = scripted(fake, fu.text_chunks([f"w{i} " for i in range(400)], interval=0.05))
    open_chat(driver, site, app.base_url, model)
    send(driver, "Go on")
    wait_until(lambda: answer(driver)["text"] or None, WAIT, "the first words")
    request = fake.wait_for_request(model)
    driver.find_element(By.ID, "stop").click()
    clicked = time.monotonic()
    assert fake.wait_closed(request, timeout=3) - clicked < 1.0
    wait_until(lambda: status(driver) == "ready", WAIT, "the page to settle")
    stopped = answer(driver)["text"]
    assert stopped and len(stopped.split()) < 400


def test_attachment_goes_upstream_as_a_content_part(
    driver: t.Any, site: str, app: LiveApp, fake: fu.FakeUpstream, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    png = base64.b64decode(rich.IMAGE.split(",", 1)[1])
    image = tmp_path / "pixel.png"
    image.write_bytes(png)
    model = scripted(fake, fu.text_chunks(["A pixel."]))
    open_chat(driver, site, app.base_url, model)
    driver.find_element(By.ID, "files").send_keys(str(image))
    send(driver, "What is this?")
    wait_until(lambda: status(driver) == "ready" and answer(driver)["text"], WAIT, "the answer")
    content = fake.wait_for_request(model).json["messages"][-1]["content"]
    # useChat puts the files before the text, and they keep that order upstream
    assert [part["type"] for part in content] == ["image_url", "text"]
    assert content[1] == {"type": "text", "text": "What is this?"}
    url = content[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png
    assert messages(driver)[0]["images"] == [url]  # the user's message shows it


def test_demo_model_works_through_it(driver: t.Any, site: str) -> None:
    with LiveApp({"NGAI_DEMO": "1"}) as demo:
        open_chat(driver, site, demo.base_url)
        send(driver, "Hi there")
        wait_until(lambda: status(driver) == "ready" and answer(driver)["text"], 30, "the demo")
    reply = answer(driver)
    assert reply["text"].startswith("You said:\n\nHi there\n\n")
    assert reply["reasoning"]
    assert reply["sources"]
