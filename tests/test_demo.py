"""The offline demo model (SPEC §2 ``NGAI_DEMO``): what it streams, chunk by chunk."""

from __future__ import annotations

import json
import typing as t

import pytest

from ngai_chat.upstream import Chunk
from ngai_chat.upstream.demo import DEMO_CITATION
from ngai_chat.upstream.demo import DEMO_MODEL
from ngai_chat.upstream.demo import MAX_QUOTED_WORDS
from ngai_chat.upstream.demo import DemoUpstream
from ngai_chat.upstream.demo import demo_reasoning
from ngai_chat.upstream.demo import demo_reply

MARKDOWN = (
    "Here is  a table:\n"
    "\n"
    "| a | b |\n"
    "|---|---|\n"
    "| 1 | 2 |\n"
    "\n"
    "```python\n"
    "def f(x):\n"
    "    return x  # two  spaces\n"
    "```\n"
    "line one  \n"
    "line two"
)


def run(text: str | list[t.Any], **kwargs: t.Any) -> tuple[list[Chunk], list[float]]:
    """Every chunk the demo streams for one user message, and the pauses it took."""
    pauses: list[float] = []
    demo = DemoUpstream(sleep=pauses.append, **kwargs)
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": text}]}
    return list(demo.stream_chat(body, referer=None)), pauses


def deltas(chunks: list[Chunk]) -> list[dict[str, t.Any]]:
    return [c.value["choices"][0]["delta"] for c in chunks if c.value["choices"]]


def content(chunks: list[Chunk]) -> str:
    return "".join(d.get("content") or "" for d in deltas(chunks))


def test_reply_quotes_the_message_exactly_with_its_line_breaks() -> None:
    chunks, _ = run(MARKDOWN)
    text = content(chunks)
    assert text == demo_reply([{"role": "user", "content": MARKDOWN}])
    assert f"\n\n{MARKDOWN}\n\n" in text  # verbatim, as its own block
    assert "  a table" in text and "line one  \nline two" in text


def test_each_chunk_is_one_word_with_its_whitespace() -> None:
    chunks, _ = run("one  two\n\nthree")
    pieces = [d["content"] for d in deltas(chunks) if d.get("content")]
    assert len(pieces) > 10
    assert all(piece.strip() and " " not in piece.strip() for piece in pieces), pieces
    assert "two\n\n" in pieces and "one  " in pieces


def test_reasoning_comes_first_with_matching_details() -> None:
    chunks, _ = run("Think about this")
    items = deltas(chunks)
    thinking = [d for d in items if d.get("reasoning")]
    first_text = next(i for i, d in enumerate(items) if d.get("content"))
    assert thinking and all(items.index(d) < first_text for d in thinking)
    assert all(d["content"] == "" for d in thinking)
    assert "".join(d["reasoning"] for d in thinking) == demo_reasoning(
        [{"role": "user", "content": "Think about this"}]
    )
    for delta in thinking:
        (detail,) = delta["reasoning_details"]
        assert detail["type"] == "reasoning.text" and detail["index"] == 0
        assert detail["text"] == delta["reasoning"]
    assert not any(d.get("reasoning") for d in items[first_text:])


def test_one_citation_pointing_into_the_reply() -> None:
    chunks, _ = run("Cite something")
    annotations = [a for d in deltas(chunks) for a in d.get("annotations", [])]
    assert len(annotations) == 1
    (annotation,) = annotations
    assert annotation["type"] == "url_citation"
    citation = annotation["url_citation"]
    assert {k: citation[k] for k in DEMO_CITATION} == DEMO_CITATION
    text = content(chunks)
    cited = text[citation["start_index"] : citation["end_index"]]
    assert cited == "Set OPENROUTER_API_KEY to talk to a real model through OpenRouter."


def test_finish_then_usage_last_and_one_generation_id() -> None:
    chunks, _ = run("Count my tokens please")
    *rest, finish, usage = [c.value for c in chunks]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in rest)
    assert usage["choices"] == []
    numbers = usage["usage"]
    assert numbers["cost"] == 0
    assert numbers["prompt_tokens"] == 4
    reasoning = numbers["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == sum(1 for d in deltas(chunks) if d.get("reasoning"))
    assert numbers["completion_tokens"] > reasoning > 0
    assert numbers["total_tokens"] == numbers["prompt_tokens"] + numbers["completion_tokens"]
    ids = {c.value["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("gen-demo-")
    assert {c.value["model"] for c in chunks} == {DEMO_MODEL}


def test_chunks_are_json_as_they_would_be_received() -> None:
    chunks, _ = run("Grüße 😀")
    for chunk in chunks:
        assert json.loads(chunk.text) == chunk.value
    assert "Grüße 😀" in content(chunks)


def test_paced_at_about_twenty_words_a_second() -> None:
    chunks, pauses = run("one two three")
    words = sum(1 for d in deltas(chunks) if d.get("content") or d.get("reasoning"))
    assert pauses and pauses == pytest.approx([0.05] * len(pauses))
    assert words - 1 <= len(pauses) <= words


@pytest.mark.parametrize(
    ("said", "quoted"),
    [
        pytest.param("\n\n  indented\nnext  \n\n", "  indented\nnext", id="blank-edges"),
        pytest.param("a\r\nb\rc", "a\nb\nc", id="crlf"),
        pytest.param("```js\nlet x", "```js\nlet x\n```", id="open-fence-closed"),
        pytest.param("~~~~\n```\nx", "~~~~\n```\nx\n~~~~", id="open-tilde-fence"),
        pytest.param("```\nx\n```", "```\nx\n```", id="closed-fence-kept"),
    ],
)
def test_quote_edges(said: str, quoted: str) -> None:
    assert demo_reply([{"role": "user", "content": said}]).startswith(f"You said:\n\n{quoted}\n\n")


def test_content_parts_and_last_user_message() -> None:
    parts = [
        {"type": "text", "text": "first"},
        {"type": "image_url"},
        {"type": "text", "text": "second"},
    ]
    messages = [
        {"role": "user", "content": "older"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": parts},
    ]
    assert demo_reply(messages).startswith("You said:\n\nfirst\nsecond\n\n")


def test_empty_and_long_messages() -> None:
    assert demo_reply([]).startswith("You sent no text. ")
    assert demo_reply([{"role": "user", "content": " \n "}]).startswith("You sent no text. ")
    long = " ".join(f"w{n}" for n in range(MAX_QUOTED_WORDS + 50))
    reply = demo_reply([{"role": "user", "content": long}])
    assert f"w{MAX_QUOTED_WORDS - 1} …" in reply and f"w{MAX_QUOTED_WORDS} " not in reply


def test_lists_one_free_model() -> None:
    (model,) = DemoUpstream().list_models()["data"]
    assert model["id"] == DEMO_MODEL
    assert model["pricing"]["prompt"] == model["pricing"]["completion"] == "0"
