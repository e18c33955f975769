"""The chat page's newer features (SPEC §3 ``GET /``, issue 19) in a real headless Chromium.

Attachments by the button, by paste and by drop (a 4000 x 3000 image arrives upstream at
2048 px; a PDF as a ``file`` part), generated images and tool calls scripted through
the fake upstream, the list of past conversations (reopen, rename, delete, kept across
a reload with their thumbnails, storage full), edit-and-resend, Copy, the growing
message box, the model picker over every allowed model, and the layout bugs of the
issue (Regenerate cut off, the narrow bubble, tables on a phone). No sleeps: every
wait has a deadline.
"""

from __future__ import annotations

import base64
import itertools
import json
import struct
import typing as t
import zlib
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from tests.browser.pages import console_errors
from tests.browser.pages import last_reply
from tests.browser.pages import open_page
from tests.browser.pages import saved_turns
from tests.browser.pages import send
from tests.browser.pages import serve
from tests.browser.pages import wait
from tests.browser.pages import wait_finished

pytestmark = [pytest.mark.browser, pytest.mark.live]

ARTIFACTS = ROOT / "test-artifacts"

ATTACH = "test/attachments"
IMAGER = "test/imager"
TOOLER = "test/tooler"
COUNTER = "test/counter"
LONG = "test/long"
PAINTER = "test/painter"

TOOL_ARGS = ['{"city": "Pa', 'ris", "unit"', ': "celsius", "days": [1, 2]}']
TIME = {"timezone": "Europe/Paris"}
TIME_ARGS = json.dumps(TIME)


# -- images made here (zlib + struct: no imaging library needed) -------------------------


def png(width: int, height: int, *, alpha: bool = False) -> bytes:
    """A PNG: a smooth gradient (RGB), or half-transparent (RGBA) when ``alpha``."""
    channels = 4 if alpha else 3
    rows = []
    # a few row variants, each a horizontal gradient: quick to build, smooth for JPEG
    variants = []
    for shade in range(0, 256, 8):
        row = bytearray()
        for x in range(width):
            pixel = [x * 255 // max(1, width - 1), shade, 160]
            if alpha:
                pixel.append(128)
            row += bytes(pixel)
        variants.append(b"\x00" + bytes(row))
    for y in range(height):
        rows.append(variants[(y * len(variants)) // height])
    raw = b"".join(rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    color_type = 6 if alpha else 2
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    assert channels in (3, 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def image_size(data: bytes) -> tuple[str, int, int]:
    """The type and pixel size of a PNG or JPEG."""
    if data.startswith(b"\x89PNG"):
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    assert data[:2] == b"\xff\xd8", "neither PNG nor JPEG"
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return "jpeg", width, height
        i += 2 + length
    raise AssertionError("no JPEG frame header")


def data_url_bytes(url: str, prefix: str) -> bytes:
    assert url.startswith(prefix), url[:60]
    return base64.b64decode(url[len(prefix) :], validate=True)


GENERATED_PNG = png(64, 48)
GENERATED_URL = "data:image/png;base64," + base64.b64encode(GENERATED_PNG).decode()
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


# -- scripted answers --------------------------------------------------------------------


def imager_steps() -> list[t.Any]:
    """Some text, a generated image, then images the page must refuse to show."""
    gen = fu.new_generation_id()
    image = fu.make_chunk(None, model=IMAGER, gen_id=gen)
    image["choices"][0]["delta"]["images"] = [
        {"type": "image_url", "image_url": {"url": GENERATED_URL}}
    ]
    refused = fu.make_chunk(None, model=IMAGER, gen_id=gen)
    refused["choices"][0]["delta"]["images"] = [
        {"type": "image_url", "image_url": {"url": "javascript:window.__pwned=7"}},
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="}},
    ]
    return [
        fu.make_chunk("", model=IMAGER, gen_id=gen),
        fu.make_chunk("Here is your image.", model=IMAGER, gen_id=gen),
        fu.Pause(0.05),
        image,
        refused,
        fu.make_chunk("", finish_reason="stop", model=IMAGER, gen_id=gen),
        fu.usage_chunk(model=IMAGER, gen_id=gen),
        fu.Done(),
    ]


def tooler_steps() -> list[t.Any]:
    """Two parallel tool calls in fragments, interleaved, ending with ``tool_calls``."""
    gen = fu.new_generation_id()

    def fragment(calls: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        chunk = fu.make_chunk(None, model=TOOLER, gen_id=gen)
        chunk["choices"][0]["delta"]["tool_calls"] = calls
        return chunk

    first = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    second = {"id": "call_2", "type": "function", "function": {"name": "get_time"}}
    return [
        fu.make_chunk("", model=TOOLER, gen_id=gen),
        fragment([{"index": 0, **first, "function": {**first["function"], "arguments": ""}}]),
        fragment([{"index": 0, "function": {"arguments": TOOL_ARGS[0]}}]),
        fragment([{"index": 1, **second, "function": {**second["function"], "arguments": ""}}]),
        fragment([{"index": 0, "function": {"arguments": TOOL_ARGS[1]}}]),
        fragment([{"index": 1, "function": {"arguments": TIME_ARGS}}]),
        fragment([{"index": 0, "function": {"arguments": TOOL_ARGS[2]}}]),
        fu.make_chunk(None, finish_reason="tool_calls", model=TOOLER, gen_id=gen),
        fu.usage_chunk(model=TOOLER, gen_id=gen),
        fu.Done(),
    ]


LONG_LINES = [f"Line {n} of a long answer." for n in range(1, 41)]
TABLE = "\n\n| Item | Count | Total |\n|---|---|---|\n| 1111111 | 2222222 | 3333333 |\n"
LONG_PIECES = [line + "\n\n" for line in LONG_LINES] + [TABLE]


@pytest.fixture(scope="module")
def fake() -> t.Iterator[fu.FakeUpstream]:
    with fu.FakeUpstream() as server:
        for model in (ATTACH, IMAGER, TOOLER, COUNTER, LONG):
            server.models["data"].append(
                {"id": model, "name": model, "pricing": {"prompt": "0", "completion": "0"}}
            )
        server.models["data"].append(
            {
                "id": PAINTER,
                "name": PAINTER,
                "architecture": {"output_modalities": ["image", "text"]},
                "pricing": {"prompt": "0", "completion": "0"},
            }
        )
        server.script(PAINTER, lambda request: imager_steps())
        server.script(ATTACH, fu.text_chunks(["Got ", "them."], model=ATTACH))
        server.script(IMAGER, lambda request: imager_steps())
        server.script(TOOLER, lambda request: tooler_steps())
        numbers = itertools.count(1)
        server.script(
            COUNTER, lambda request: fu.text_chunks([f"Answer number {next(numbers)}", "."])
        )
        server.script(LONG, fu.text_chunks(LONG_PIECES, model=LONG, interval=0.03))
        yield server


@pytest.fixture(scope="module")
def app(driver: t.Any, fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_API_KEY": "test-key",
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
        # three attachments in one message; SPEC's new default is larger still
        "NGAI_MAX_BODY_BYTES": str(16 * 1024 * 1024),
    }
    with serve(driver, env) as live:
        yield live


@pytest.fixture
def screen(driver: t.Any) -> t.Iterator[t.Any]:
    """The browser; its colour scheme and size are put back afterwards."""
    console_errors(driver)  # start with an empty console
    yield driver
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def screenshot(driver: t.Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def no_console_errors(driver: t.Any) -> None:
    errors = console_errors(driver)
    assert errors == [], errors


def pending_ready(driver: t.Any, count: int) -> None:
    wait(driver, 20).until(
        lambda d: d.execute_script(
            "const items = [...document.querySelectorAll('[data-testid=pending-item]')];"
            "return items.length === arguments[0] && items.every(i => i.dataset.state === 'ready')",
            count,
        )
    )


#: make a File in the page: a canvas picture (``noise`` makes it incompressible)
MAKE_FILE_JS = """
window.__makeFile = async (name, width, height, type, noise) => {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  context.fillStyle = '#2a7';
  context.fillRect(0, 0, width, height);
  context.fillStyle = '#fff';
  context.fillRect(width / 4, height / 4, width / 2, height / 2);
  if (noise) {
    const image = context.getImageData(0, 0, width, height);
    for (let i = 0; i < image.data.length; i++) {
      if (i % 4 !== 3) image.data[i] = (Math.random() * 256) | 0;
    }
    context.putImageData(image, 0, 0);
  }
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, type));
  return new File([blob], name, {type});
};
"""

#: paste one made file into the message box, drop another on the conversation
PASTE_AND_DROP_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const pasted = new DataTransfer();
  pasted.items.add(await window.__makeFile('pasted.png', 300, 200, 'image/png', false));
  const prompt = document.getElementById('prompt');
  const how = {bubbles: true, cancelable: true};
  const paste = new ClipboardEvent('paste', {clipboardData: pasted, ...how});
  prompt.dispatchEvent(paste);
  const dropped = new DataTransfer();
  dropped.items.add(await window.__makeFile('dropped.png', 200, 300, 'image/png', false));
  const log = document.getElementById('log');
  log.dispatchEvent(new DragEvent('dragenter', {dataTransfer: dropped, ...how}));
  const zoneShown = !document.getElementById('drop-zone').hidden;
  const drop = new DragEvent('drop', {dataTransfer: dropped, ...how});
  log.dispatchEvent(drop);
  done({
    pasteTaken: paste.defaultPrevented,
    dropTaken: drop.defaultPrevented,
    zoneShown,
    zoneAfter: !document.getElementById('drop-zone').hidden,
  });
})().catch((error) => done({error: String(error)}));
"""


# -- attachments -------------------------------------------------------------------------


def test_a_big_photo_arrives_at_2048_px_and_a_pdf_as_a_file_part(
    screen: t.Any, app: LiveApp, fake: fu.FakeUpstream, tmp_path: Path
) -> None:
    driver = screen
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(4000, 3000))
    clear = tmp_path / "logo.png"
    clear.write_bytes(png(3000, 1000, alpha=True))
    pdf = tmp_path / "notes.pdf"
    pdf.write_bytes(PDF)

    open_page(driver, app.url("/"), ATTACH)
    file_input = driver.find_element(By.ID, "file")
    file_input.send_keys("\n".join(str(p) for p in (photo, clear, pdf)))
    pending_ready(driver, 3)
    chip = driver.find_element(By.CSS_SELECTOR, "[data-testid=pending] .file-chip")
    assert chip.text == f"PDF · notes.pdf · {len(PDF)} B"
    screenshot(driver, "chat-attachments-pending.png")
    send(driver, "What is in these?")
    reply = wait_finished(driver, 1, timeout=30)
    assert (reply["state"], reply["text"]) == ("done", "Got them.")

    content = fake.chat_requests(ATTACH)[-1].json["messages"][0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url", "image_url", "file"]
    assert content[0] == {"type": "text", "text": "What is in these?"}
    # the photo: no transparency, so JPEG, 2048 px on its long side
    jpeg = data_url_bytes(content[1]["image_url"]["url"], "data:image/jpeg;base64,")
    assert image_size(jpeg) == ("jpeg", 2048, 1536)
    # transparency stays PNG
    clear_png = data_url_bytes(content[2]["image_url"]["url"], "data:image/png;base64,")
    assert image_size(clear_png) == ("png", 2048, 683)
    assert content[3]["file"]["filename"] == "notes.pdf"
    assert data_url_bytes(content[3]["file"]["file_data"], "data:application/pdf;base64,") == PDF

    # The message shows thumbnails (loaded) and the PDF's name and size.
    shown = driver.execute_script(
        "const m = document.querySelector('.msg.user');"
        "return {imgs: [...m.querySelectorAll('.attachments img')]"
        "  .map(i => [i.alt, i.naturalWidth]),"
        " chips: [...m.querySelectorAll('.attachments .file-chip')].map(c => c.textContent),"
        " pending: document.querySelectorAll('[data-testid=pending-item]').length}"
    )
    assert shown["imgs"] == [["photo.png", 2048], ["logo.png", 2048]]
    assert shown["chips"] == [f"PDF · notes.pdf · {len(PDF)} B"]
    assert shown["pending"] == 0
    # A thumbnail opens the image full size.
    driver.find_element(By.CSS_SELECTOR, ".msg.user .attachments button.thumb-open").click()
    viewer = wait(driver).until(
        lambda d: d.execute_script(
            "const v = document.getElementById('viewer');"
            "const i = document.getElementById('viewer-img');"
            "return v.open && i.complete && i.naturalWidth ? [i.naturalWidth, i.alt] : null"
        )
    )
    assert viewer == [2048, "photo.png"]
    driver.find_element(By.ID, "viewer-close").click()
    assert not driver.execute_script("return document.getElementById('viewer').open")
    screenshot(driver, "chat-attachments.png")
    no_console_errors(driver)


def test_paste_and_drop_attach_images(screen: t.Any, app: LiveApp, fake: fu.FakeUpstream) -> None:
    driver = screen
    open_page(driver, app.url("/"), ATTACH)
    driver.execute_script(MAKE_FILE_JS)
    got = driver.execute_async_script(PASTE_AND_DROP_JS)
    assert "error" not in got, got
    assert got == {"pasteTaken": True, "dropTaken": True, "zoneShown": True, "zoneAfter": False}
    pending_ready(driver, 2)
    send(driver, "Pasted and dropped.")
    assert wait_finished(driver, 1)["state"] == "done"
    content = fake.chat_requests(ATTACH)[-1].json["messages"][0]["content"]
    sizes = [
        image_size(data_url_bytes(part["image_url"]["url"], "data:image/png;base64,"))
        for part in content[1:]
    ]
    # small PNGs go as they are
    assert sizes == [("png", 300, 200), ("png", 200, 300)]
    alts = driver.execute_script(
        "return [...document.querySelectorAll('.msg.user .attachments img')].map(i => i.alt)"
    )
    assert alts == ["pasted.png", "dropped.png"]
    no_console_errors(driver)


# -- what models send beyond text ------------------------------------------------------------

#: the newest answer's images, tool calls and buttons
ANSWER_EXTRAS_JS = """
const msg = [...document.querySelectorAll('.msg.assistant')].pop();
return {
  images: [...msg.querySelectorAll('.generated img')].map(i => ({
    src: i.getAttribute('src'), natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
  })),
  refused: [...msg.querySelectorAll('.generated .note')].map(n => n.textContent),
  tools: [...msg.querySelectorAll('[data-testid=tool-call]')].map(d => ({
    open: d.open,
    summary: d.querySelector('summary').textContent,
    args: d.querySelector('.tool-args').textContent,
  })),
  copy: Boolean(msg.querySelector('[data-testid=copy]')),
  regenerate: Boolean(msg.querySelector('[data-testid=regenerate]')),
  jsUrls: document.querySelectorAll('[src^="javascript" i], [href^="javascript" i]').length,
  pwned: window.__pwned ?? null,
};
"""


def extras(driver: t.Any) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], driver.execute_script(ANSWER_EXTRAS_JS))


def test_generated_image_is_shown_readable_opens_full_size_and_survives_a_reload(
    screen: t.Any, app: LiveApp
) -> None:
    driver = screen
    open_page(driver, app.url("/"), IMAGER)
    send(driver, "Draw a square.")
    reply = wait_finished(driver, 1)
    assert (reply["state"], reply["text"]) == ("done", "Here is your image.")
    got = wait(driver).until(lambda d: (x := extras(d))["images"][0]["natural"] and x)
    assert [i["src"] for i in got["images"]] == [GENERATED_URL]
    assert got["images"][0]["natural"] == 64
    assert got["images"][0]["shown"] >= 300, "a generated image is shown at a readable size"
    # javascript: and svg images are not shown, and say so
    assert len(got["refused"]) == 2 and all("not shown" in r for r in got["refused"])
    assert (got["jsUrls"], got["pwned"]) == (0, None)
    assert got["copy"] and got["regenerate"]
    screenshot(driver, "chat-image.png")

    driver.find_element(By.CSS_SELECTOR, ".generated button.image-open").click()
    wait(driver).until(lambda d: d.execute_script("return document.getElementById('viewer').open"))
    assert driver.find_element(By.ID, "viewer-img").get_attribute("src") == GENERATED_URL
    screenshot(driver, "chat-image-full-size.png")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # a dialog closes on Escape
    wait(driver).until(
        lambda d: not d.execute_script("return document.getElementById('viewer').open")
    )

    turns = saved_turns(driver)
    assert turns[1]["images"] == [{"url": GENERATED_URL}]
    open_page(driver, app.url("/"), fresh=False)
    again = wait(driver).until(
        lambda d: (x := extras(d))["images"] and x["images"][0]["natural"] and x
    )
    assert [i["src"] for i in again["images"]] == [GENERATED_URL]
    no_console_errors(driver)


def test_tool_calls_show_folded_with_name_and_pretty_arguments(
    screen: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    driver = screen
    open_page(driver, app.url("/"), TOOLER)
    send(driver, "What is the weather in Paris?")
    reply = wait_finished(driver, 1)
    assert reply["state"] == "done", reply
    got = extras(driver)
    weather = json.dumps({"city": "Paris", "unit": "celsius", "days": [1, 2]}, indent=2)
    assert got["tools"] == [
        {"open": False, "summary": "Tool call get_weather", "args": weather},
        {"open": False, "summary": "Tool call get_time", "args": json.dumps(TIME, indent=2)},
    ]
    assert got["copy"] and got["regenerate"], "a tool-call answer is a full answer"
    driver.find_element(By.CSS_SELECTOR, "[data-testid=tool-call] summary").click()
    assert extras(driver)["tools"][0]["open"] is True
    screenshot(driver, "chat-tool-call.png")

    turns = saved_turns(driver)
    assert [turn["role"] for turn in turns] == ["user", "assistant"]
    assert turns[1]["finishReason"] == "tool_calls"
    assert turns[1]["toolCalls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": "".join(TOOL_ARGS)},
        },
        {
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_time", "arguments": TIME_ARGS},
        },
    ]
    # The next turn: the answer without text is not sent back (its calls were never run).
    Select(driver.find_element(By.ID, "model")).select_by_value(COUNTER)
    send(driver, "Never mind.")
    assert wait_finished(driver, 2)["state"] == "done"
    assert fake.chat_requests(COUNTER)[-1].json["messages"] == [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "user", "content": "Never mind."},
    ]
    no_console_errors(driver)


CLIENT_JS = """
const [model, fromDone] = arguments;
const done = arguments[arguments.length - 1];
// fromDone: a server whose done event has toolCalls of its own (SPEC §3)
class WithToolCalls extends EventSource {
  addEventListener(type, listener, options) {
    if (type !== 'done') return super.addEventListener(type, listener, options);
    return super.addEventListener(type, (event) => {
      const data = JSON.stringify({...JSON.parse(event.data), toolCalls: fromDone});
      listener({data, lastEventId: event.lastEventId});
    }, options);
  }
}
import(new URL('static/ngai-client.js', document.baseURI).href).then(async (client) => {
  const calls = [];
  const result = await client.streamChat({
    EventSource: fromDone ? WithToolCalls : EventSource,
    baseUrl: document.querySelector('meta[name=ngai-api-base]').content,
    model,
    messages: [{role: 'user', content: 'Go.'}],
    onImage: (image, chunk) =>
      calls.push(['image', image.image_url.url.slice(0, 30), chunk.object]),
    onToolCall: (call, index) =>
      calls.push(['tool', index, call.function.name, call.function.arguments]),
  });
  done({result, calls});
}).catch((error) => done({error: String(error && error.stack || error)}));
"""


def test_client_gives_images_and_tool_calls(driver: t.Any, app: LiveApp) -> None:
    open_page(driver, app.url("/"))
    got = driver.execute_async_script(CLIENT_JS, IMAGER, None)
    assert "error" not in got, got
    assert got["result"]["images"][0] == {"type": "image_url", "image_url": {"url": GENERATED_URL}}
    assert len(got["result"]["images"]) == 3  # as sent: the page decides what it shows
    assert got["calls"][0] == ["image", GENERATED_URL[:30], "chat.completion.chunk"]
    assert got["result"]["toolCalls"] == []

    got = driver.execute_async_script(CLIENT_JS, TOOLER, None)
    assert "error" not in got, got
    result, calls = got["result"], got["calls"]
    assert result["finishReason"] == "tool_calls"
    assert [c["function"] for c in result["toolCalls"]] == [
        {"name": "get_weather", "arguments": "".join(TOOL_ARGS)},
        {"name": "get_time", "arguments": TIME_ARGS},
    ]
    assert [c["id"] for c in result["toolCalls"]] == ["call_1", "call_2"]
    # each fragment reported with the call as assembled so far
    assert calls[0] == ["tool", 0, "get_weather", ""]
    assert calls[-1] == ["tool", 0, "get_weather", "".join(TOOL_ARGS)]
    assert ["tool", 1, "get_time", TIME_ARGS] in calls
    assert result["images"] == []

    # The server's done.toolCalls, when it has them, are the result's.
    server_calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    got = driver.execute_async_script(CLIENT_JS, TOOLER, server_calls)
    assert "error" not in got, got
    assert got["result"]["toolCalls"] == server_calls


# -- conversations ---------------------------------------------------------------------------


def chat_titles(driver: t.Any) -> list[str]:
    return t.cast(
        list[str],
        driver.execute_script(
            "return [...document.querySelectorAll('[data-testid=chat-open]')]"
            ".map(b => b.textContent)"
        ),
    )


def user_texts(driver: t.Any) -> list[str]:
    return t.cast(
        list[str],
        driver.execute_script(
            "return [...document.querySelectorAll('.msg.user .text')].map(m => m.textContent)"
        ),
    )


def test_past_conversations_reopen_rename_delete_and_survive_a_reload(
    screen: t.Any, app: LiveApp, tmp_path: Path
) -> None:
    driver = screen
    picture = tmp_path / "cat.png"
    picture.write_bytes(png(640, 480))
    open_page(driver, app.url("/"), COUNTER)
    assert chat_titles(driver) == []
    driver.find_element(By.ID, "file").send_keys(str(picture))
    pending_ready(driver, 1)
    send(driver, "Tell me about cats", "and their whiskers.")
    assert wait_finished(driver, 1)["state"] == "done"
    assert chat_titles(driver) == ["Tell me about cats"]

    driver.find_element(By.ID, "new-chat").click()
    assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
    send(driver, "Dogs now")
    assert wait_finished(driver, 1)["state"] == "done"
    assert chat_titles(driver) == ["Dogs now", "Tell me about cats"]
    screenshot(driver, "chat-list.png")

    # A reload keeps both, the open one open, the other one's thumbnail too.
    open_page(driver, app.url("/"), fresh=False)
    assert chat_titles(driver) == ["Dogs now", "Tell me about cats"]
    assert user_texts(driver) == ["Dogs now"]
    driver.find_elements(By.CSS_SELECTOR, "[data-testid=chat-open]")[1].click()
    assert user_texts(driver) == ["Tell me about cats\nand their whiskers."]
    thumb = wait(driver).until(
        lambda d: d.execute_script(
            "const i = document.querySelector('.msg.user .attachments img');"
            "return i && i.complete ? [i.alt, i.naturalWidth] : null"
        )
    )
    assert thumb == ["cat.png", 640]
    current = driver.find_element(By.CSS_SELECTOR, ".chat-item.current [data-testid=chat-open]")
    assert current.text == "Tell me about cats"

    # Rename: Enter keeps the new title, across a reload.
    driver.find_elements(By.CSS_SELECTOR, "[data-testid=chat-rename]")[1].click()
    title = driver.find_element(By.CSS_SELECTOR, "[data-testid=chat-title-input]")
    title.send_keys(Keys.CONTROL, "a")
    title.send_keys("Cats", Keys.ENTER)
    assert chat_titles(driver) == ["Dogs now", "Cats"]
    open_page(driver, app.url("/"), fresh=False)
    assert chat_titles(driver) == ["Dogs now", "Cats"]
    assert user_texts(driver) == ["Tell me about cats\nand their whiskers."]

    # Delete asks once more, then the conversation is gone from the list and the storage.
    # (With a mouse, Rename and Delete show on the conversation pointed at.)
    other = driver.find_elements(By.CSS_SELECTOR, "[data-testid=chat-item]")[0]
    ActionChains(driver).move_to_element(other).perform()
    delete = other.find_element(By.CSS_SELECTOR, "[data-testid=chat-delete]")
    delete.click()
    assert chat_titles(driver) == ["Dogs now", "Cats"]
    assert delete.text == "Delete?"
    delete.click()
    assert chat_titles(driver) == ["Cats"]
    keys = driver.execute_script(
        "return Object.keys(localStorage).filter(k => k.includes(':chat:'))"
    )
    assert len(keys) == 1
    assert user_texts(driver) == ["Tell me about cats\nand their whiskers."]

    # On a phone the list is a drawer.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    wait(driver).until(lambda d: d.execute_script("return window.innerWidth") == 390)
    wait(driver).until(lambda d: not d.find_element(By.ID, "chats").is_displayed())
    driver.find_element(By.ID, "menu").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "chats").rect["x"] >= 0)
    wait(driver).until(lambda d: d.find_element(By.ID, "chats").is_displayed())
    screenshot(driver, "chat-list-phone.png")
    driver.find_element(By.CSS_SELECTOR, "[data-testid=chat-open]").click()
    menu = driver.find_element(By.ID, "menu")
    wait(driver).until(lambda d: menu.get_attribute("aria-expanded") == "false")
    no_console_errors(driver)


#: fill localStorage but for about `arguments[0]` characters
FILL_STORAGE_JS = """
const room = arguments[0];
let size = 1 << 20;
let n = 0;
const sizes = [];
while (size >= 256) {
  try {
    localStorage.setItem(`filler-${n}`, 'x'.repeat(size));
    sizes.push([`filler-${n}`, size]);
    n += 1;
  } catch {
    size = Math.floor(size / 2);
  }
}
let freed = 0;
for (const [key, length] of sizes.reverse()) {
  if (freed >= room) break;
  localStorage.removeItem(key);
  freed += length;
}
return freed;
"""


def test_storage_full_keeps_the_text_and_names_what_it_dropped(screen: t.Any, app: LiveApp) -> None:
    driver = screen
    open_page(driver, app.url("/"), ATTACH)
    driver.execute_script(MAKE_FILE_JS)
    try:
        assert driver.execute_script(FILL_STORAGE_JS, 40_000) >= 40_000
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.__makeFile('noise.png', 400, 300, 'image/png', true).then((file) => {"
            "  const dt = new DataTransfer(); dt.items.add(file);"
            "  document.getElementById('log').dispatchEvent("
            "    new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));"
            "  done();"
            "});"
        )
        pending_ready(driver, 1)
        send(driver, "Keep my words.")
        assert wait_finished(driver, 1)["state"] == "done"
        status = driver.find_element(By.ID, "status")
        assert "storage is full" in status.text and "noise.png" in status.text, status.text
        assert status.get_attribute("data-kind") == "warn"

        open_page(driver, app.url("/"), fresh=False)
        assert user_texts(driver) == ["Keep my words."]
        chip = driver.find_element(By.CSS_SELECTOR, ".msg.user .file-chip.dropped")
        assert chip.text.startswith("noise.png") and "not kept" in chip.text
        assert last_reply(driver)["text"] == "Got them."
    finally:
        driver.execute_script("localStorage.clear()")
    no_console_errors(driver)


def test_edit_and_resend_replaces_the_answers_after_it(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), COUNTER)
    send(driver, "First question")
    wait_finished(driver, 1)
    send(driver, "Second question")
    wait_finished(driver, 2)
    before = len(fake.chat_requests(COUNTER))

    driver.find_elements(By.CSS_SELECTOR, "[data-testid=edit]")[0].click()
    box = driver.find_element(By.CSS_SELECTOR, "[data-testid=edit-box]")
    assert box.get_attribute("value") == "First question"
    box.send_keys(", edited")
    driver.find_element(By.CSS_SELECTOR, "[data-testid=edit-send]").click()
    reply = wait_finished(driver, 1)
    assert reply["state"] == "done"
    assert user_texts(driver) == ["First question, edited"]
    requests = fake.chat_requests(COUNTER)
    assert len(requests) == before + 1
    assert requests[-1].json["messages"] == [{"role": "user", "content": "First question, edited"}]
    turns = saved_turns(driver)
    assert [(turn["role"], turn["content"]) for turn in turns] == [
        ("user", "First question, edited"),
        ("assistant", reply["text"]),
    ]
    # Escape leaves an edit unchanged.
    driver.find_element(By.CSS_SELECTOR, "[data-testid=edit]").click()
    box = driver.find_element(By.CSS_SELECTOR, "[data-testid=edit-box]")
    box.send_keys(" and more", Keys.ESCAPE)
    assert user_texts(driver) == ["First question, edited"]
    assert driver.find_elements(By.CSS_SELECTOR, "[data-testid=edit-box]") == []
    assert len(fake.chat_requests(COUNTER)) == before + 1


def test_copy_on_every_answer(driver: t.Any, app: LiveApp) -> None:
    open_page(driver, app.url("/"), COUNTER)
    send(driver, "One")
    first = wait_finished(driver, 1)["text"]
    send(driver, "Two")
    wait_finished(driver, 2)
    buttons = driver.find_elements(By.CSS_SELECTOR, ".msg.assistant [data-testid=copy]")
    assert len(buttons) == 2
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {
            "origin": app.url("/").rstrip("/"),
            "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
        },
    )
    buttons[0].click()
    wait(driver).until(lambda d: buttons[0].text == "Copied")
    pasted = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('ERROR ' + e))"
    )
    assert pasted == first


def test_message_box_grows_up_to_a_third_of_the_window(driver: t.Any, app: LiveApp) -> None:
    open_page(driver, app.url("/"), COUNTER)
    prompt = driver.find_element(By.ID, "prompt")
    small = prompt.size["height"]
    prompt.send_keys("a line")
    for n in range(4):
        prompt.send_keys(Keys.SHIFT, Keys.ENTER, Keys.SHIFT, f"line {n}")
    five = prompt.size["height"]
    assert five > small + 40, (small, five)
    # a 30-line paste: as high as a third of the window, then it scrolls
    driver.execute_script(
        "const p = document.getElementById('prompt');"
        "p.value = Array.from({length: 30}, (_, i) => `pasted line ${i}`).join('\\n');"
        "p.dispatchEvent(new Event('input'))"
    )
    third = driver.execute_script("return window.innerHeight / 3")
    tall = prompt.size["height"]
    assert third - 2 <= tall <= third + 2, (tall, third)
    assert prompt.value_of_css_property("overflow-y") == "auto"
    send(driver, "")  # Enter sends it: the box shrinks back
    wait_finished(driver, 1)
    assert prompt.size["height"] == small


def test_model_picker_lists_every_model_with_prices_searchable_and_kept(
    driver: t.Any, app: LiveApp
) -> None:
    open_page(driver, app.url("/"))
    options = driver.execute_script(
        "return Object.fromEntries([...document.getElementById('model').options]"
        ".map(o => [o.value, o.textContent]))"
    )
    assert options["openai/gpt-4o"] == "OpenAI: GPT-4o — $2.5 in · $10 out per M tokens"
    assert options["anthropic/claude-3.7-sonnet"] == (
        "Anthropic: Claude 3.7 Sonnet — $3 in · $15 out per M tokens"
    )
    assert options["mistralai/mistral-7b-instruct:free"].endswith("— free")
    assert options["openrouter/auto"] == "Auto Router — price varies"
    paths = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name))"
        ".filter(u => u.pathname.endsWith('/models')).map(u => u.pathname + u.search)"
    )
    assert paths == ["/models"]  # every allowed model, not ?free=1

    search = driver.find_element(By.ID, "model-filter")
    search.send_keys("claude")
    values = driver.execute_script(
        "return [...document.getElementById('model').options].map(o => o.value)"
    )
    chosen = Select(driver.find_element(By.ID, "model")).first_selected_option
    # the current choice stays, the matches follow
    assert set(values) == {chosen.get_attribute("value"), "anthropic/claude-3.7-sonnet"}
    search.send_keys(Keys.ENTER)
    assert (
        Select(driver.find_element(By.ID, "model")).first_selected_option.get_attribute("value")
        == "anthropic/claude-3.7-sonnet"
    )
    assert search.get_attribute("value") == ""

    open_page(driver, app.url("/"), fresh=False)
    picker = Select(driver.find_element(By.ID, "model"))
    assert picker.first_selected_option.get_attribute("value") == "anthropic/claude-3.7-sonnet"
    assert len(picker.options) == len(options)
    driver.execute_script("localStorage.clear()")


def test_demo_mode_offers_the_demo_model(driver: t.Any) -> None:
    with serve(driver, {"NGAI_DEMO": "1", "GUNICORN_GRACEFUL_TIMEOUT": "3"}) as demo:
        open_page(driver, demo.url("/"))
        picker = Select(driver.find_element(By.ID, "model"))
        assert picker.first_selected_option.get_attribute("value") == "ngai/demo"
        assert picker.first_selected_option.text.endswith("— free")


# -- the layout bugs of the issue --------------------------------------------------------------

#: the newest answer's width now, and whether Regenerate is inside the log's view
GEOMETRY_JS = """
const msg = [...document.querySelectorAll('.msg.assistant')].pop();
const log = document.getElementById('log').getBoundingClientRect();
const regen = msg?.querySelector('[data-testid=regenerate]')?.getBoundingClientRect();
return {
  width: msg ? msg.getBoundingClientRect().width : null,
  text: msg ? msg.querySelector('.text').textContent.length : 0,
  regenInView: regen ? regen.bottom <= log.bottom + 0.5 && regen.top >= log.top : null,
};
"""


def test_regenerate_in_view_bubble_not_narrow_and_phone_tables_scroll(
    screen: t.Any, app: LiveApp
) -> None:
    driver = screen
    open_page(driver, app.url("/"), LONG)
    send(driver, "A long answer, please.")
    early = wait(driver).until(lambda d: (g := d.execute_script(GEOMETRY_JS))["text"] > 0 and g)
    assert wait_finished(driver, 1)["state"] == "done"
    late = wait(driver).until(
        lambda d: (g := d.execute_script(GEOMETRY_JS))["regenInView"] is not None and g
    )
    assert late["regenInView"] is True, "Regenerate is cut off below the log"
    assert early["width"] == late["width"], "the answer's bubble widened as it streamed"

    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    wait(driver).until(lambda d: d.execute_script("return window.innerWidth") == 390)
    cells = driver.execute_script(
        "const cells = [...document.querySelectorAll('.msg.assistant table td')];"
        "const line = parseFloat(getComputedStyle(cells[0]).lineHeight);"
        "return cells.map(c => { const r = document.createRange(); r.selectNodeContents(c);"
        "  return [c.textContent, r.getClientRects().length, line]; })"
    )
    # each number on one line: the table scrolls sideways rather than break them
    assert [(text, lines) for text, lines, _ in cells] == [
        ("1111111", 1),
        ("2222222", 1),
        ("3333333", 1),
    ]
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    driver.execute_script(
        "document.querySelector('.msg.assistant table').scrollIntoView({block: 'center'})"
    )
    screenshot(driver, "chat-phone-table.png")


def test_screenshots_light_dark_phone(screen: t.Any, app: LiveApp, tmp_path: Path) -> None:
    """A conversation with an attachment, an image and a tool call, in each look."""
    driver = screen
    picture = tmp_path / "chart.png"
    picture.write_bytes(png(900, 600))
    open_page(driver, app.url("/"), COUNTER)
    send(driver, "An earlier chat")
    wait_finished(driver, 1)
    driver.find_element(By.ID, "new-chat").click()
    Select(driver.find_element(By.ID, "model")).select_by_value(IMAGER)
    driver.find_element(By.ID, "file").send_keys(str(picture))
    pending_ready(driver, 1)
    send(driver, "Draw this chart again.")
    wait_finished(driver, 1)
    Select(driver.find_element(By.ID, "model")).select_by_value(TOOLER)
    send(driver, "And check the weather.")
    wait_finished(driver, 2)
    wait(driver).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('img')].every(i => i.complete)"
        )
    )
    driver.execute_script("document.querySelector('.generated')?.scrollIntoView({block: 'center'})")
    screenshot(driver, "chat-features-light.png")
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    screenshot(driver, "chat-features-dark.png")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    wait(driver).until(lambda d: d.execute_script("return window.innerWidth") == 390)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    driver.execute_script("document.querySelector('.generated')?.scrollIntoView({block: 'center'})")
    screenshot(driver, "chat-features-phone.png")
    no_console_errors(driver)


#: record the bodies the page posts to /prepare
RECORD_PREPARE_JS = """
window.__prepared = [];
const fetch = window.fetch;
window.fetch = (url, init) => {
  if (String(url).endsWith('/prepare')) window.__prepared.push(JSON.parse(init.body));
  return fetch(url, init);
};
"""


def test_image_models_are_asked_for_images(driver: t.Any, app: LiveApp) -> None:
    """OpenRouter draws only when asked: ``modalities`` for models that output images."""
    for model, asked in ((PAINTER, ["image", "text"]), (COUNTER, None)):
        open_page(driver, app.url("/"), model)
        driver.execute_script(RECORD_PREPARE_JS)
        send(driver, "Draw a cat.")
        wait_finished(driver, 1)
        body = driver.execute_script("return window.__prepared[0]")
        assert body["model"] == model
        assert body.get("modalities") == asked


def test_storage_with_no_room_at_all_says_the_conversation_is_not_kept(
    screen: t.Any, app: LiveApp
) -> None:
    driver = screen
    open_page(driver, app.url("/"), COUNTER)
    try:
        driver.execute_script(FILL_STORAGE_JS, 0)
        send(driver, "Nowhere to keep this.")
        assert wait_finished(driver, 1)["state"] == "done"
        status = driver.find_element(By.ID, "status")
        assert "lasts only as long as the page" in status.text, status.text
    finally:
        driver.execute_script("localStorage.clear()")
    no_console_errors(driver)


def test_the_one_conversation_an_older_page_kept_joins_the_list(
    driver: t.Any, app: LiveApp
) -> None:
    open_page(driver, app.url("/"))
    old = {
        "v": 1,
        "turns": [
            {"role": "user", "content": "From before the list"},
            {"role": "assistant", "content": "An old answer.", "model": COUNTER},
        ],
    }
    driver.execute_script(
        "localStorage.setItem('ngai-chat:conversation:/', JSON.stringify(arguments[0]))", old
    )
    open_page(driver, app.url("/"), fresh=False)
    assert chat_titles(driver) == ["From before the list"]
    assert user_texts(driver) == ["From before the list"]
    assert last_reply(driver)["text"] == "An old answer."
    assert driver.execute_script("return localStorage.getItem('ngai-chat:conversation:/')") is None
    assert [turn["content"] for turn in saved_turns(driver)] == [
        "From before the list",
        "An old answer.",
    ]
