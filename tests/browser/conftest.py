"""A headless Chromium driven by selenium, for the chat page tests.

Debian's ``chromium`` and ``chromium-driver`` packages provide the browser and its
driver (``make deps`` installs them with apt). Their paths are given explicitly and
``SE_OFFLINE`` is set, so selenium-manager never downloads anything.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import typing as t
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("NGAI_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("NGAI_CHROMEDRIVER", "/usr/bin/chromedriver"))

#: Flags for a quiet, self-contained browser: no network of its own, no GPU, no sandbox
#: (containers run tests as root), and a fresh profile per test session.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--window-size=1200,900",
)


def _require(path: Path, package: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path} not found: the browser tests need Debian's {package!r} package "
            f"(`sudo apt-get install -y chromium chromium-driver`, which `make deps` runs).",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def driver() -> t.Iterator[t.Any]:
    """One headless Chromium for the whole session; tests navigate it."""
    _require(CHROMIUM, "chromium")
    _require(CHROMEDRIVER, "chromium-driver")
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must never fetch a browser

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ngai-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(20)
    browser.set_script_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> t.Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _console_on_failure(request: pytest.FixtureRequest) -> t.Iterator[None]:
    """Print the browser console when a test that used the browser fails."""
    yield
    if not request.node.stash.get(_FAILED, False) or "driver" not in request.fixturenames:
        return
    browser = request.getfixturevalue("driver")
    try:
        entries = browser.get_log("browser")
    except Exception as exc:  # the browser may be what failed
        entries = [{"level": "?", "message": f"(console not available: {exc})"}]
    for entry in entries:
        print(f"[browser {entry['level']}] {entry['message']}")
