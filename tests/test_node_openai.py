"""The official ``openai`` npm package in Node against the /v1 door (gunicorn + gevent
on 127.0.0.1, relaying from the fake upstream): one streamed and one non-streamed
chat completion, and a refused key raising the package's ``AuthenticationError``.

Needs ``node`` (20+) and ``npm ci --prefix tests/node_openai`` (``make test`` runs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import typing as t

import pytest

from bench import fake_upstream as fu
from bench.live import ROOT
from bench.live import LiveApp
from tests.conftest import API_KEY

pytestmark = pytest.mark.live

NODE_DIR = ROOT / "tests" / "node_openai"
TOKEN = "tok-node"


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node (20 or later) is not on PATH; the OpenAI npm client test runs in Node")
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        pytest.fail(
            "tests/node_openai/node_modules is missing: run `npm ci --prefix tests/node_openai` "
            "(installs the pinned `openai` package from its package-lock.json)"
        )
    return binary


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_API_TOKENS": TOKEN,
    }
    with LiveApp(env) as live:
        yield live


def test_the_openai_npm_package(node: str, app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = "test/node-openai"
    pieces = ["Hello ", "from ", "the ", "relay ", "😀"]
    fake.script(model, fu.text_chunks(pieces, usage={"prompt_tokens": 4, "total_tokens": 9}))
    result = subprocess.run(
        [node, str(NODE_DIR / "openai_client.mjs"), app.url("/v1"), TOKEN, model],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["streamed"] == "".join(pieces)
    assert seen["finish"] == "stop"
    assert seen["usage"] == {"prompt_tokens": 4, "total_tokens": 9}
    assert seen["completion"] == {
        "id": seen["completion"]["id"],
        "object": "chat.completion",
        "content": "".join(pieces),
        "finish": "stop",
        "usage": {"prompt_tokens": 4, "total_tokens": 9},
    }
    assert seen["completion"]["id"].startswith("gen-fake-")
    assert seen["refused"] == {"name": "AuthenticationError", "status": 401, "code": "unauthorized"}
    assert len(fake.chat_requests(model)) == 2  # the refused call never went upstream
