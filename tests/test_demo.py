"""The offline demo model (SPEC §2 ``NGAI_DEMO``): what it streams, chunk by chunk."""

from __future__ import annotations

import base64
import json
import struct
import typing as t
import zlib

import pytest

from ngai_chat.chunks import Answer
from ngai_chat.chunks import image_url
from ngai_chat.upstream import Chunk
from ngai_chat.upstream.demo import DEMO_CITATION
from ngai_chat.upstream.demo import DEMO_MODEL
from ngai_chat.upstream.demo import MAX_QUOTED_WORDS
from ngai_chat.upstream.demo import DemoUpstream
from ngai_chat.upstream.demo import demo_png
from ngai_chat.upstream.demo import demo_reasoning
from ngai_chat.upstream.demo import demo_reply
from ngai_chat.upstream.demo import wants_image

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


def run(
    text: str | list[t.Any], extra: dict[str, t.Any] | None = None, **kwargs: t.Any
) -> tuple[list[Chunk], list[float]]:
    """Every chunk the demo streams for one user message, and the pauses it took.

    :param extra: more fields of the request body (``tools``, ``modalities``).
    """
    pauses: list[float] = []
    demo = DemoUpstream(sleep=pauses.append, **kwargs)
    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": text}], **(extra or {})}
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


# --- images, tools, attachments (issue 16) -------------------------------------------


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and raw scanlines of a PNG, read with the standard library:
    the signature, chunk CRCs and the IHDR checked on the way.
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        data = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + data) == crc
        chunks[kind] = data
        offset += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    return width, height, zlib.decompress(chunks[b"IDAT"])


def test_demo_png_is_a_valid_png() -> None:
    width, height, raw = _png_pixels(demo_png("a cat"))
    assert (width, height) == (64, 64)
    assert len(raw) == 64 * (1 + 64 * 3)
    assert demo_png("a cat") == demo_png("a cat") != demo_png("a dog")


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        ({"messages": [{"role": "user", "content": "Draw a cat"}]}, True),
        ({"messages": [{"role": "user", "content": "please generate an image of a boat"}]}, True),
        ({"messages": [{"role": "user", "content": "Hi"}], "modalities": ["image", "text"]}, True),
        ({"messages": [{"role": "user", "content": "Hi"}], "modalities": ["text"]}, False),
        ({"messages": [{"role": "user", "content": "What is in this image?"}]}, False),
        ({"messages": [{"role": "user", "content": "drawer"}]}, False),
    ],
)
def test_wants_image(body: dict[str, t.Any], wanted: bool) -> None:
    assert wants_image(body) is wanted


def test_asked_to_draw_the_reply_carries_one_png_in_delta_images() -> None:
    chunks, _ = run("Draw me a lighthouse")
    images = [image for c in chunks for image in c.images]
    assert len(images) == 1
    url = image_url(images[0])
    assert url is not None and url.startswith("data:image/png;base64,")
    width, _, _ = _png_pixels(base64.b64decode(url.split(",", 1)[1], validate=True))
    assert width == 64
    assert chunks[-2].finish_reason == "stop"  # the image comes before the finish
    plain, _ = run("Hello")
    assert not any(c.images for c in plain)


def test_with_tools_the_first_tool_is_called_in_fragments() -> None:
    tools = [
        {"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"}, "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            }, "required": ["city"]},
        }},
        {"type": "function", "function": {"name": "never_called"}},
    ]  # fmt: skip
    chunks, _ = run("Weather in Zürich?", {"tools": tools})
    fragments = [f for c in chunks for f in c.tool_calls]
    assert len(fragments) >= 4
    assert fragments[0]["id"].startswith("call_demo_") and fragments[0]["type"] == "function"
    assert fragments[0]["function"]["name"] == "get_weather"
    assert all("id" not in f and "name" not in f["function"] for f in fragments[1:])
    answer = Answer(DEMO_MODEL)
    for chunk in chunks:
        answer.add(chunk)
    (call,) = answer.tool_calls.calls()
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert arguments == {"city": "Weather in Zürich?", "days": 1, "unit": "celsius"}
    assert answer.finish_reason == "tool_calls"
    assert content(chunks) == ""  # a call instead of an answer
    assert chunks[-1].value["choices"] == [] and chunks[-1].usage is not None


def test_the_reply_names_the_attachments() -> None:
    png = "data:image/png;base64," + base64.b64encode(bytes(3000)).decode()
    pdf = "data:application/pdf;base64," + base64.b64encode(bytes(2 * 1024 * 1024)).decode()
    parts = [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "file", "file": {"filename": "paper.pdf", "file_data": pdf}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    chunks, _ = run(parts)
    text = content(chunks)
    assert text.startswith("You said:\n\nWhat are these?\n\n")
    assert (
        'You attached an image (image/png, 2.9 KB), a file "paper.pdf" (application/pdf, '
        "2.0 MB), an image (linked, https://example.com/cat.jpg) and audio (wav, 4 bytes)."
    ) in text
