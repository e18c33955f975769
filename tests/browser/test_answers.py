"""What the chat page shows of an answer (issue 10), in real Chromium.

The fake upstream streams what today's models stream: reasoning first (with
``content: ""``), then a Markdown answer with ``url_citation`` annotations (one
repeated), then usage with cost. The page must show the reasoning live in a
"Thinking" block that folds away once the answer starts, render the Markdown (code
block, table, link) without running anything hostile, list the sources, show
tokens and cost, keep the conversation across a reload, send ``reasoning_details``
back, and regenerate the last answer with exactly one new upstream request.
Screenshots (light, dark, phone) go to ``test-artifacts/``.
"""

from __future__ import annotations

import itertools
import typing as t

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from tests.browser.pages import last_reply
from tests.browser.pages import open_page
from tests.browser.pages import saved_turns
from tests.browser.pages import send
from tests.browser.pages import serve
from tests.browser.pages import wait
from tests.browser.pages import wait_finished

pytestmark = [pytest.mark.browser, pytest.mark.live]

ARTIFACTS = ROOT / "test-artifacts"

THINKER = "test/thinker"
HOSTILE = "test/hostile"
COUNTER = "test/counter"
PONDER = "test/ponder"

REASONING = ["Let me ", "think ", "about ", "a **small** ", "example."]
ANSWER = [
    "Here is **the** answer.\n\n",
    "```python\n",
    "def greet(name):\n",
    '    return f"hi {name}"\n',
    "```\n\n",
    "| Lang | Year |\n",
    "|------|-----:|\n",
    "| Python | 1991 |\n",
    "| JS | 1995 |\n\n",
    "See the [docs](https://example.com/docs) for more.",
]
ANSWER_TEXT = "".join(ANSWER)
CITE_A = {
    "url": "https://example.com/python-history",
    "title": "A short history of Python",
    "content": "Python appeared in 1991.",
    "start_index": 60,
    "end_index": 80,
}
CITE_B = {"url": "https://example.org/js", "title": "", "content": "JS, 1995."}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 40,
    "total_tokens": 52,
    "cost": 0.00123,
    "completion_tokens_details": {"reasoning_tokens": 9},
}
#: what the relay's ``done`` (and the client) merge the reasoning_details into
MERGED_DETAILS = [
    {"type": "reasoning.text", "text": "".join(REASONING), "format": "unknown", "index": 0},
    {"type": "reasoning.encrypted", "data": "[REDACTED]", "format": "unknown", "index": 1},
]

HOSTILE_TEXT = (
    "Careful: <img src=x onerror=window.__pwned=1> and "
    "[x](javascript:window.__pwned=2) and <script>window.__pwned=3</script> "
    "and ![y](javascript:window.__pwned=4)."
)

#: records, at every change of the newest answer, whether it was thinking or answering
PHASES_JS = """
window.__phases = [];
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
const log = document.getElementById('log');
new MutationObserver(() => {
  const all = log.querySelectorAll('.msg.assistant');
  const msg = all[all.length - 1];
  if (!msg) return;
  const details = msg.querySelector('details.thinking');
  window.__phases.push({
    thinking: details ? details.querySelector('.reasoning').textContent.length : 0,
    open: details ? details.open : null,
    answer: msg.querySelector('.text').textContent.length,
  });
}).observe(log, {childList: true, subtree: true, characterData: true, attributes: true});
"""

#: whether the newest answer shows reasoning and none of the answer yet
THINKING_ONLY_JS = """
const msg = [...document.querySelectorAll('.msg.assistant')].pop();
const reasoning = msg?.querySelector('details.thinking .reasoning')?.textContent ?? '';
return reasoning.length > 0 && msg.querySelector('.text').textContent === '';
"""

#: the newest answer's rendered parts
ANSWER_PARTS_JS = """
const all = document.querySelectorAll('.msg.assistant');
const msg = all[all.length - 1];
const details = msg.querySelector('details.thinking');
const hrefAndText = (a) => [a.getAttribute('href'), a.textContent];
return {
  summary: details ? details.querySelector('summary').textContent : null,
  open: details ? details.open : null,
  reasoning: details ? details.querySelector('.reasoning').textContent : null,
  reasoningHtml: details ? details.querySelector('.reasoning').innerHTML : null,
  thinkingBeforeAnswer: details ? Boolean(
    details.compareDocumentPosition(msg.querySelector('.text')) & Node.DOCUMENT_POSITION_FOLLOWING
  ) : null,
  code: [...msg.querySelectorAll('.text pre code')].map(c => [c.className, c.textContent]),
  headers: [...msg.querySelectorAll('.text table th')].map(c => c.textContent),
  cells: [...msg.querySelectorAll('.text table td')].map(c => c.textContent),
  links: [...msg.querySelectorAll('.text a')].map(hrefAndText),
  sources: [...msg.querySelectorAll('.sources a')].map(hrefAndText),
  usage: msg.querySelector('.usage')?.textContent ?? null,
  imgs: document.querySelectorAll('.msg img').length,
  scripts: msg.querySelectorAll('script').length,
  jsLinks: document.querySelectorAll('a[href^="javascript" i]').length,
  regenerate: Boolean(msg.querySelector('[data-testid=regenerate]')),
  pwned: window.__pwned ?? null,
};
"""


def _reasoning_chunk(piece: str, gen_id: str) -> dict[str, t.Any]:
    chunk = fu.make_chunk("", model=THINKER, gen_id=gen_id)
    detail = {"type": "reasoning.text", "text": piece, "format": "unknown", "index": 0}
    chunk["choices"][0]["delta"].update(reasoning=piece, reasoning_details=[detail])
    return chunk


def thinker_steps() -> list[t.Any]:
    """Reasoning, a Markdown answer with annotations (one repeated), usage with cost."""
    gen_id = fu.new_generation_id()
    steps: list[t.Any] = [fu.make_chunk("", model=THINKER, gen_id=gen_id)]
    for piece in REASONING:
        steps += [fu.Pause(0.2), _reasoning_chunk(piece, gen_id)]
    redacted = fu.make_chunk("", model=THINKER, gen_id=gen_id)
    redacted["choices"][0]["delta"]["reasoning_details"] = [
        {"type": "reasoning.encrypted", "data": "[REDACTED]", "format": "unknown", "index": 1}
    ]
    steps.append(redacted)
    for index, piece in enumerate(ANSWER):
        chunk = fu.make_chunk(piece, model=THINKER, gen_id=gen_id)
        if index == 7:
            chunk["choices"][0]["delta"]["annotations"] = [
                {"type": "url_citation", "url_citation": CITE_A}
            ]
        if index == len(ANSWER) - 1:
            chunk["choices"][0]["delta"]["annotations"] = [
                {"type": "url_citation", "url_citation": CITE_A},
                {"type": "url_citation", "url_citation": CITE_B},
            ]
        steps += [fu.Pause(0.05), chunk]
    steps.append(fu.make_chunk("", finish_reason="stop", model=THINKER, gen_id=gen_id))
    steps += [fu.usage_chunk(USAGE, model=THINKER, gen_id=gen_id), fu.Done()]
    return steps


@pytest.fixture(scope="module")
def fake() -> t.Iterator[fu.FakeUpstream]:
    with fu.FakeUpstream() as server:
        server.models["data"].extend(
            {"id": m, "name": m, "pricing": {"prompt": "0", "completion": "0"}}
            for m in (THINKER, HOSTILE, COUNTER, PONDER)
        )
        server.script(THINKER, lambda request: thinker_steps())
        server.script(HOSTILE, fu.text_chunks([HOSTILE_TEXT[:40], HOSTILE_TEXT[40:]]))
        numbers = itertools.count(1)
        server.script(
            COUNTER,
            lambda request: fu.text_chunks([f"Answer number {next(numbers)}", "."], interval=0.05),
        )
        pondering = [fu.make_chunk("", model=PONDER)]
        for n in range(200):
            pondering += [fu.Pause(0.1), _reasoning_chunk(f"step {n}. ", "gen-fake-ponder")]
        server.script(PONDER, pondering)
        yield server


@pytest.fixture(scope="module")
def app(driver: t.Any, fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_BASE_URL": fake.base_url,
        "OPENROUTER_API_KEY": "test-key",
        "GUNICORN_GRACEFUL_TIMEOUT": "3",
    }
    with serve(driver, env) as live:
        yield live


@pytest.fixture
def screen(driver: t.Any) -> t.Iterator[t.Any]:
    """The browser; its colour scheme and size are put back afterwards."""
    yield driver
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def parts(driver: t.Any) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], driver.execute_script(ANSWER_PARTS_JS))


def saved(driver: t.Any) -> list[dict[str, t.Any]]:
    """The open conversation as the page keeps it in localStorage."""
    return saved_turns(driver)


def screenshot(driver: t.Any, name: str) -> None:
    """Save the page, scrolled to show the last question and as much of its answer as fits."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.execute_script(
        "const users = document.querySelectorAll('.msg.user');"
        "users[users.length - 1]?.scrollIntoView({block: 'start'})"
    )
    assert driver.save_screenshot(str(ARTIFACTS / name))


def test_thinking_then_markdown_answer_sources_and_cost(
    screen: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    driver = screen
    open_page(driver, app.url("/"), THINKER)
    driver.execute_script(PHASES_JS)
    send(driver, "Show me code and a table.")
    # While it thinks: a screenshot of the open Thinking block.
    wait(driver).until(lambda d: d.execute_script(THINKING_ONLY_JS))
    screenshot(driver, "chat-thinking.png")
    reply = wait_finished(driver, 1)
    assert reply["state"] == "done", reply

    phases = driver.execute_script("return window.__phases")
    thinking = [p for p in phases if p["thinking"] and not p["answer"]]
    answering = [p for p in phases if p["answer"]]
    assert thinking and answering, phases
    # Reasoning showed, open, before any of the answer; folded once the answer began.
    assert phases.index(thinking[0]) < phases.index(answering[0])
    assert all(p["open"] is True for p in thinking), thinking
    assert all(p["open"] is False for p in answering), [p for p in answering if p["open"]]

    got = parts(driver)
    assert got["summary"].startswith("Thinking") and got["open"] is False
    assert got["thinkingBeforeAnswer"] is True
    assert got["reasoning"] == "Let me think about a small example."
    assert "<strong>small</strong>" in got["reasoningHtml"]  # reasoning is Markdown too
    assert got["code"] == [["language-python", 'def greet(name):\n    return f"hi {name}"']]
    assert got["headers"] == ["Lang", "Year"]
    assert got["cells"] == ["Python", "1991", "JS", "1995"]
    assert got["links"] == [["https://example.com/docs", "docs"]]
    # Sources: de-duplicated by url, in order, titled (or the url when untitled).
    assert got["sources"] == [
        [CITE_A["url"], CITE_A["title"]],
        [CITE_B["url"], CITE_B["url"]],
    ]
    assert got["usage"] == "52 tokens (12 in, 40 out, 9 reasoning) · $0.00123"
    assert "52 tokens" in reply["status"] and "$0.00123" in reply["status"]
    assert got["regenerate"] is True
    # The page's Content-Security-Policy blocked nothing the page itself does.
    assert driver.execute_script("return window.__violations") == []

    # The code block's Copy button puts exactly the code on the clipboard.
    origin = app.url("/").rstrip("/")
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    copy = driver.find_element(By.CSS_SELECTOR, ".msg.assistant .code button.copy")
    assert copy.get_attribute("aria-label") == "Copy python code"
    copy.click()
    wait(driver).until(lambda d: copy.text == "Copied")
    pasted = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], (e) => arguments[0]('ERROR ' + e))"
    )
    assert pasted == 'def greet(name):\n    return f"hi {name}"'

    # Opening the folded reasoning again is one click (or Enter on its summary).
    summary = driver.find_element(By.CSS_SELECTOR, ".msg.assistant details.thinking summary")
    summary.send_keys(Keys.ENTER)
    assert parts(driver)["open"] is True
    summary.click()

    screenshot(driver, "chat-light.png")
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 17, 21)", background
    screenshot(driver, "chat-dark.png")

    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    wait(driver).until(lambda d: d.execute_script("return window.innerWidth") == 390)
    # Nothing wider than the phone: long code and tables scroll inside their own box.
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    screenshot(driver, "chat-phone.png")


def test_hostile_answer_runs_no_script(driver: t.Any, app: LiveApp) -> None:
    open_page(driver, app.url("/"), HOSTILE)
    send(driver, "Say something nasty.")
    reply = wait_finished(driver, 1)
    assert reply["state"] == "done", reply
    got = parts(driver)
    assert (got["imgs"], got["scripts"], got["jsLinks"]) == (0, 0, 0), got
    assert got["links"] == []
    # The markup shows as the text it is; unsafe links as their labels.
    assert "<img src=x onerror=window.__pwned=1>" in reply["text"]
    assert "<script>window.__pwned=3</script>" in reply["text"]
    assert " x and " in reply["text"] and " y." in reply["text"]
    assert driver.execute_script("return window.__pwned ?? null") is None


def test_conversation_survives_a_reload_and_new_chat_keeps_it(driver: t.Any, app: LiveApp) -> None:
    open_page(driver, app.url("/"), THINKER)
    send(driver, "First question")
    assert wait_finished(driver, 1)["state"] == "done"
    before = parts(driver)

    open_page(driver, app.url("/"), THINKER, fresh=False)
    texts = driver.execute_script(
        "return [...document.querySelectorAll('.msg')].map(m => [m.dataset.testid,"
        " m.querySelector('.text').textContent])"
    )
    assert texts[0] == ["message-user", "First question"]
    assert texts[1][0] == "message-assistant" and len(texts) == 2
    after = parts(driver)
    for key in ("reasoning", "code", "cells", "links", "sources", "usage", "regenerate"):
        assert after[key] == before[key], key
    assert after["open"] is False
    assert "restored" in driver.find_element(By.ID, "status").text
    turns = saved(driver)
    assert [turn["role"] for turn in turns] == ["user", "assistant"]
    assert turns[1]["content"] == ANSWER_TEXT

    driver.find_element(By.ID, "new-chat").click()
    assert saved(driver) == []
    assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
    open_page(driver, app.url("/"), fresh=False)
    assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
    # The first conversation is still there, in the list, and opens again.
    items = driver.find_elements(By.CSS_SELECTOR, "[data-testid=chat-open]")
    assert [item.get_attribute("textContent") for item in items] == ["First question"]
    items[0].click()
    assert parts(driver)["usage"] == before["usage"]


def test_next_turn_sends_reasoning_details_back(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), THINKER)
    send(driver, "First question")
    assert wait_finished(driver, 1)["state"] == "done"
    send(driver, "Second question")
    reply = wait_finished(driver, 2)
    assert reply["state"] == "done", reply
    second = fake.chat_requests(THINKER)[-1].json["messages"]
    assert second == [
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": ANSWER_TEXT, "reasoning_details": MERGED_DETAILS},
        {"role": "user", "content": "Second question"},
    ]
    assert len(saved(driver)) == 4


def test_regenerate_makes_one_new_request_and_replaces_the_last_answer(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), COUNTER)
    send(driver, "Count once")
    first = wait_finished(driver, 1)
    assert first["text"].startswith("Answer number ")
    fake.wait_for(lambda: len(fake.chat_requests(COUNTER)) == 1)
    before = len(fake.chat_requests(COUNTER))
    context = fake.chat_requests(COUNTER)[-1].json["messages"]

    button = driver.find_element(By.CSS_SELECTOR, "[data-testid=regenerate]")
    button.send_keys(Keys.ENTER)  # a button: Enter works as a click
    wait(driver).until(
        lambda d: last_reply(d)["state"] == "streaming" or last_reply(d)["text"] != first["text"]
    )
    second = wait_finished(driver, 1)
    assert second["state"] == "done"
    assert second["text"] != first["text"] and second["text"].startswith("Answer number ")

    requests = fake.chat_requests(COUNTER)
    assert len(requests) == before + 1
    # The same conversation was asked again: the replaced answer is not in it.
    assert requests[-1].json["messages"] == context
    turns = saved(driver)
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[1]["content"] == second["text"]
    assert len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 1


def test_demo_mode_thinks_renders_markdown_and_cites(screen: t.Any) -> None:
    driver = screen
    with serve(driver, {"NGAI_DEMO": "1", "GUNICORN_GRACEFUL_TIMEOUT": "3"}) as demo:
        open_page(driver, demo.url("/"))
        driver.execute_script(PHASES_JS)
        send(
            driver,
            "A table:",
            "",
            "| a | b |",
            "|---|---|",
            "| 1 | 2 |",
            "",
            "```js",
            "let x = 1;",
            "```",
        )
        reply = wait_finished(driver, 1, timeout=40)
        assert reply["state"] == "done", reply
        got = parts(driver)
        phases = driver.execute_script("return window.__phases")
        screenshot(driver, "chat-demo.png")
    assert any(p["thinking"] and not p["answer"] and p["open"] for p in phases)
    assert got["summary"].startswith("Thinking") and got["open"] is False
    assert "quote them back exactly" in got["reasoning"]
    assert got["headers"] == ["a", "b"] and got["cells"] == ["1", "2"]
    assert got["code"] == [["language-js", "let x = 1;"]]
    assert got["sources"] == [["https://openrouter.ai/docs/quickstart", "OpenRouter Quickstart"]]
    assert got["usage"] is not None and got["usage"].endswith("· $0")
    assert "reasoning)" in got["usage"]


CLIENT_JS = """
const [model, bare, done] = arguments;
// bare: a server whose done event has none of the new fields (as the seed server's)
class BareDone extends EventSource {
  addEventListener(type, listener, options) {
    if (type !== 'done') return super.addEventListener(type, listener, options);
    return super.addEventListener(type, (event) => {
      const {finishReason, model, usage} = JSON.parse(event.data);
      const data = JSON.stringify({finishReason, model, usage});
      listener({data, lastEventId: event.lastEventId});
    }, options);
  }
}
import(new URL('static/ngai-client.js', document.baseURI).href).then(async (client) => {
  const calls = [];
  const result = await client.streamChat({
    EventSource: bare ? BareDone : EventSource,
    baseUrl: document.querySelector('meta[name=ngai-api-base]').content,
    model,
    messages: [{role: 'user', content: 'Think, then answer.'}],
    onReasoning: (piece, chunk) => calls.push(['reasoning', piece, chunk.reasoning]),
    onToken: (piece, chunk) => calls.push(['token', piece, chunk.content]),
  });
  done({result, calls});
}).catch((error) => done({error: String(error && error.stack || error)}));
"""


@pytest.mark.parametrize("bare", [False, True], ids=["from-done", "from-chunks"])
def test_client_resolves_every_field_and_calls_on_reasoning_first(
    driver: t.Any, app: LiveApp, bare: bool
) -> None:
    open_page(driver, app.url("/"))
    got = driver.execute_async_script(CLIENT_JS, THINKER, bare)
    assert "error" not in got, got["error"]
    result, calls = got["result"], got["calls"]
    assert [c[1] for c in calls if c[0] == "reasoning"] == REASONING
    assert [c[1] for c in calls if c[0] == "token"] == ANSWER
    # each callback gets the chunk event's data too, with its top-level text field
    assert all(c[1] == c[2] for c in calls), calls
    first_token = next(i for i, c in enumerate(calls) if c[0] == "token")
    assert all(c[0] == "reasoning" for c in calls[:first_token])
    assert result["text"] == ANSWER_TEXT
    assert result["reasoning"] == "".join(REASONING)
    assert result["finishReason"] == "stop"
    assert result["model"] == THINKER
    assert result["usage"] == USAGE
    assert result["generationId"].startswith("gen-fake-")
    assert result["citations"] == [CITE_A, CITE_B]
    assert result["reasoningDetails"] == MERGED_DETAILS


def test_escape_while_thinking_stops_and_keeps_the_reasoning(
    driver: t.Any, app: LiveApp, fake: fu.FakeUpstream
) -> None:
    open_page(driver, app.url("/"), PONDER)
    send(driver, "Think for a long time.")
    wait(driver).until(lambda d: "step 2. " in (parts(d)["reasoning"] or ""))
    request = fake.wait_for_request(PONDER)
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    fake.wait_closed(request, timeout=5)
    reply = wait_finished(driver, 1)
    assert reply["state"] == "cancelled" and "Stopped." in reply["notes"]
    got = parts(driver)
    assert got["reasoning"].startswith("step 0. step 1. ")
    assert got["open"] is False and got["summary"].startswith("Thinking")
    assert reply["text"] == ""
    # Nothing was answered: only the question stays in the conversation.
    assert saved(driver) == [{"role": "user", "content": "Think for a long time."}]
