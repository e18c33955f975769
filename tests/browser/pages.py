"""What the chat page tests share: serving the app to the browser, driving the page, waits."""

from __future__ import annotations

import contextlib
import typing as t

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from selenium.webdriver.support.ui import WebDriverWait

from bench.live import LiveApp

__all__ = [
    "console_errors",
    "enabled",
    "last_reply",
    "open_page",
    "saved_turns",
    "send",
    "serve",
    "wait",
    "wait_finished",
]

#: ``last_reply``: the newest assistant message as one consistent snapshot
LAST_REPLY_JS = """
const all = document.querySelectorAll('.msg.assistant');
const msg = all[all.length - 1];
const status = document.getElementById('status').textContent;
const buttons = {
  sendEnabled: !document.getElementById('send').disabled,
  stopEnabled: !document.getElementById('stop').disabled,
};
if (!msg) return {state: null, text: '', notes: '', status: status, count: 0, ...buttons};
return {
  ...buttons,
  state: msg.dataset.state,
  text: msg.querySelector('.text').textContent,
  notes: [...msg.querySelectorAll('.note')].map(n => n.textContent).join(' '),
  status: status,
  count: all.length,
};
"""


@contextlib.contextmanager
def serve(driver: t.Any, env: dict[str, str], **kwargs: t.Any) -> t.Iterator[LiveApp]:
    """Serve the app for the browser; leave the page before gunicorn stops."""
    with LiveApp(env, **kwargs) as app:
        try:
            yield app
        finally:
            # Close the page's EventSources before gunicorn's graceful shutdown.
            driver.get("about:blank")


def wait(driver: t.Any, timeout: float = 10.0) -> WebDriverWait:
    """A WebDriverWait that polls often: the pages under test stream quickly."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def last_reply(driver: t.Any) -> dict[str, t.Any]:
    """The newest answer: its state, text, notes, the status line and the buttons."""
    return t.cast(dict[str, t.Any], driver.execute_script(LAST_REPLY_JS))


def open_page(driver: t.Any, url: str, model: str | None = None, *, fresh: bool = True) -> None:
    """Load the chat page, wait for its model list, and pick ``model``.

    :param fresh: start with no saved conversation (the page keeps one across loads).
    """
    driver.get(url)
    if fresh and driver.execute_script(
        "const had = localStorage.length > 0; localStorage.clear(); return had"
    ):
        driver.get(url)
    wait(driver).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready === 'true'")
    )
    if model is not None:
        Select(driver.find_element(By.ID, "model")).select_by_value(model)


def send(driver: t.Any, *lines: str) -> None:
    """Type ``lines`` into the message box (Shift+Enter between them) and press Enter."""
    prompt = driver.find_element(By.ID, "prompt")
    prompt.click()
    for index, line in enumerate(lines):
        if index:
            prompt.send_keys(Keys.SHIFT, Keys.ENTER, Keys.SHIFT)
        prompt.send_keys(line)
    prompt.send_keys(Keys.ENTER)


def wait_finished(driver: t.Any, count: int, timeout: float = 15.0) -> dict[str, t.Any]:
    """Wait until the ``count``-th answer is no longer streaming; return its snapshot."""

    def finished(d: t.Any) -> dict[str, t.Any] | None:
        reply = last_reply(d)
        return reply if reply["count"] == count and reply["state"] != "streaming" else None

    return t.cast(dict[str, t.Any], wait(driver, timeout).until(finished))


def enabled(driver: t.Any, element_id: str) -> bool:
    """Whether the element with ``element_id`` (a button) can be used."""
    return bool(driver.find_element(By.ID, element_id).is_enabled())


#: ``saved_turns``: the open conversation's turns as the page keeps them in localStorage
SAVED_TURNS_JS = """
const base = document.querySelector('meta[name=ngai-api-base]').content.replace(/\\/+$/, '') || '/';
const id = localStorage.getItem(`ngai-chat:${base}:current`);
const raw = id ? localStorage.getItem(`ngai-chat:${base}:chat:${id}`) : null;
return raw ? JSON.parse(raw).turns : [];
"""


def saved_turns(driver: t.Any) -> list[dict[str, t.Any]]:
    """The turns of the open conversation, as kept in the browser's storage."""
    return t.cast(list[dict[str, t.Any]], driver.execute_script(SAVED_TURNS_JS))


def console_errors(driver: t.Any) -> list[str]:
    """The browser console's errors since the last call (the log is read once)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
