"""Helpers the chat page tests share: serving the app for the browser, and waits."""

from __future__ import annotations

import contextlib
import typing as t

from selenium.webdriver.support.ui import WebDriverWait

from tests.support.live import LiveApp

__all__ = ["serve", "wait"]


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
