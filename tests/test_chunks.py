"""The pure chunk layer against exact bytes: splitting, parsing, splicing, the answer."""

from __future__ import annotations

import json
import random
import typing as t

import pytest
import sseclient

from bench.fake_upstream import fixtures_dir
from ngai_chat import errors
from ngai_chat.chunks import REDACTED
from ngai_chat.chunks import Answer
from ngai_chat.chunks import Chunk
from ngai_chat.chunks import EventSplitter
from ngai_chat.chunks import chunk_event_data
from ngai_chat.chunks import done_data
from ngai_chat.chunks import error_data
from ngai_chat.chunks import parse_chunk
from ngai_chat.chunks import stream_error

# --- EventSplitter ------------------------------------------------------------


def split(*blocks: bytes, limit: int = 1_048_576, eof: bool = False) -> list[bytes]:
    splitter = EventSplitter(limit)
    found: list[bytes] = []
    for block in blocks:
        found += splitter.feed(block)
    return found + splitter.finish() if eof else found


UTF8_EVENT = 'data: {"c":"wörld 😀"}\n\n'.encode()


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        pytest.param([b"data: {}\n\n"], [b"{}"], id="one-event"),
        pytest.param([b"data: a\n\ndata: b\n\n"], [b"a", b"b"], id="two-in-one-block"),
        pytest.param([b"data: a\r\n\r\n"], [b"a"], id="crlf"),
        pytest.param([b"data: a\r\rdata: b\r\r"], [b"a", b"b"], id="cr"),
        pytest.param([b"data: a\r", b"\n\r\n"], [b"a"], id="crlf-split-across-reads"),
        pytest.param([b"data: a\r", b"\r"], [b"a"], id="cr-at-block-end-then-cr"),
        pytest.param([b"data: a\n", b"\n"], [b"a"], id="blank-line-split"),
        pytest.param([b"da", b"ta: ", b"a", b"\n\n"], [b"a"], id="field-split"),
        pytest.param([b": OPENROUTER PROCESSING\n\ndata: a\n\n"], [b"a"], id="comment-dropped"),
        pytest.param([b"data: a\ndata: b\n\n"], [b"a\nb"], id="data-lines-joined"),
        pytest.param([b"data:a\n\n"], [b"a"], id="no-space"),
        pytest.param([b"data:  a\n\n"], [b" a"], id="only-one-space-stripped"),
        pytest.param([b"data\n\n"], [b""], id="field-without-colon"),
        pytest.param([b"event: x\nid: 3\nretry: 5\ndata: a\n\n"], [b"a"], id="other-fields"),
        pytest.param([b"event: x\n\n"], [], id="no-data-no-event"),
        pytest.param([b"\n\n\n\ndata: a\n\n\n"], [b"a"], id="extra-blank-lines"),
        pytest.param([b"data: a"], [], id="incomplete-held"),
        pytest.param([b"data: a\r"], [], id="cr-ends-the-line-not-the-event"),
        pytest.param([b"data: a\r", b"\r"], [b"a"], id="cr-then-cr-in-next-block"),
        pytest.param([b"data: [DONE]\n\n"], [b"[DONE]"], id="done-sentinel"),
        pytest.param(
            [
                'data: {"c":"wörld 😀"}\n\n'.encode()[:12],
                'data: {"c":"wörld 😀"}\n\n'.encode()[12:],
            ],
            ['{"c":"wörld 😀"}'.encode()],
            id="utf8-split",
        ),
    ],
)
def test_splitter_table(blocks: list[bytes], expected: list[bytes]) -> None:
    assert split(*blocks) == expected


def test_splitter_byte_by_byte_matches_whole() -> None:
    body = (fixtures_dir() / "01-plain-text-usage-claude37.sse").read_bytes()
    whole = split(body)
    assert split(*(body[i : i + 1] for i in range(len(body)))) == whole
    assert len(whole) > 5


def _reference(body: bytes) -> list[str]:
    """What sseclient-py, the reference parser, makes of ``body``."""
    client = sseclient.SSEClient(iter([body[i : i + 7] for i in range(0, len(body), 7)]))
    return [event.data for event in client.events()]


@pytest.mark.parametrize("path", sorted(fixtures_dir().glob("*.sse")), ids=lambda p: p.stem)
def test_splitter_agrees_with_sseclient_on_fixtures(path: t.Any) -> None:
    body = path.read_bytes()
    assert [d.decode() for d in split(body, eof=True)] == _reference(body)


def test_splitter_agrees_with_sseclient_on_generated_streams() -> None:
    rng = random.Random(7)
    pieces = ["data: ", "data:", ": c", "id: 1", "event: e", "x", "é", " ", "{}", "😀", "data"]
    for _ in range(300):
        # one line-break style a stream: sseclient-py reads LF then CR as no blank line
        line_break = rng.choice(["\n", "\r\n", "\r"])
        lines = []
        for _ in range(rng.randint(1, 12)):
            lines.append("".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))))
            lines.append(line_break * rng.randint(1, 2))
        body = ("".join(lines) + line_break * 2).encode()
        cuts = sorted(rng.sample(range(1, len(body)), min(5, len(body) - 1)))
        blocks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert [d.decode() for d in split(*blocks, eof=True)] == _reference(body), body


def test_at_eof_an_event_with_ended_lines_is_read() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\n\ndata: [DONE]\n") == [b"a"]
    assert splitter.finish() == [b"[DONE]"]
    unfinished = EventSplitter()
    unfinished.feed(b'data: {"a"')
    assert unfinished.finish() == []


def test_an_event_that_never_ends_is_refused_without_holding_it() -> None:
    splitter = EventSplitter(1000)
    splitter.feed(b"data: " + b"x" * 900)
    with pytest.raises(errors.UpstreamStreamError) as caught:
        splitter.feed(b"x" * 200)
    assert caught.value.code == "upstream_error"
    assert "NGAI_MAX_EVENT_BYTES" in str(caught.value.message)


def test_a_whole_event_over_the_limit_is_refused() -> None:
    with pytest.raises(errors.UpstreamStreamError):
        split(b"data: " + b"x" * 2000 + b"\n\ndata: a\n\n", limit=1000)


def test_events_at_the_limit_pass() -> None:
    event = b"data: " + b"x" * 994
    assert split(event + b"\n\n", limit=1000) == [b"x" * 994]


def test_splitting_a_long_line_is_linear() -> None:
    # 16 MB in 64 KiB blocks: a quadratic buffer would copy terabytes; this is instant
    splitter = EventSplitter(32 * 1024 * 1024)
    block = b"y" * 65536
    splitter.feed(b"data: ")
    for _ in range(256):
        assert splitter.feed(block) == []
    assert splitter.feed(b"\n\n") == [b"y" * 65536 * 256]


def test_a_12_mb_image_event_in_small_blocks_costs_linear_work() -> None:
    # issue 16: an image event of 12 MB (a 4K PNG in base64), fed in 4 KiB blocks,
    # is searched once per byte, never re-searched from its start per block
    payload = b"A" * (12 * 1024 * 1024)
    event = (
        b'data: {"choices":[{"delta":{"images":[{"type":"image_url","image_url":{"url":'
        b'"data:image/png;base64,' + payload + b'"}}]}}]}\n\n'
    )
    splitter = EventSplitter(16 * 1024 * 1024)
    found: list[bytes] = []
    blocks = range(0, len(event), 4096)
    for offset in blocks:
        found += splitter.feed(event[offset : offset + 4096])
    assert found == [event[6:-2]]
    assert splitter.scanned <= len(event) + len(blocks)
    chunk = parse_chunk(found[0])
    assert chunk is not None and len(chunk.images) == 1


def test_an_event_over_the_limit_is_not_retryable() -> None:
    splitter = EventSplitter(1000)
    with pytest.raises(errors.UpstreamStreamError) as caught:
        for _ in range(3):
            splitter.feed(b"data: " + b"x" * 600)
    body = json.loads(error_data(caught.value))
    assert body["code"] == "upstream_error" and body["retryable"] is False
    assert "NGAI_MAX_EVENT_BYTES" in body["message"]
    assert errors.UpstreamStreamError("mid-stream").retryable is True  # the others still are


# --- parse_chunk ------------------------------------------------------------------

KEY = "sk-or-v1-0123456789abcdef"


def test_parse_keeps_the_upstream_text() -> None:
    data = b'{"id":"g","choices":[{"delta":{"content":"h\xc3\xa9"}}] }'
    chunk = parse_chunk(data, KEY)
    assert chunk is not None
    assert chunk.text == data.decode()
    assert chunk.content == "hé"


@pytest.mark.parametrize("data", [b"[1,2]", b'"text"', b"not json", b"{"])
def test_parse_skips_what_is_no_object(data: bytes) -> None:
    assert parse_chunk(data) is None


def test_parse_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(errors.UpstreamStreamError):
        parse_chunk(b'{"a":"\xff"}')


def test_parse_keeps_a_lone_surrogate_escaped() -> None:
    chunk = parse_chunk(b'{"choices":[{"delta":{"content":"\\ud83d"}}]}')
    assert chunk is not None and chunk.content == "\ud83d"
    assert '"content":"\\ud83d"' in chunk_event_data(chunk)


@pytest.mark.parametrize(
    "data",
    [
        f'{{"choices":[{{"delta":{{"content":"key {KEY}"}}}}]}}',
        '{"choices":[{"delta":{"content":"key \\u0073k-or-v1-0123456789abcdef"}}]}',
        '{"choices":[{"delta":{"content":"key sk\\u002dor-v1-0123456789abcdef"}}]}',
        '{"error":{"message":"bad key \\u0073\\u006b-or-v1-0123456789abcdef"}}',
        '{"error":{"metadata":{"raw":"sk-or-v1-0123456789abc\\u0064ef"}}}',
    ],
)
def test_parse_redacts_the_key_plain_or_escaped(data: str) -> None:
    chunk = parse_chunk(data.encode(), KEY)
    assert chunk is not None
    assert KEY not in chunk.text and KEY not in json.dumps(chunk.value)
    assert REDACTED in json.loads(chunk.text).__repr__()
    assert KEY not in chunk_event_data(chunk)


# --- chunk_event_data -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"id":"g","choices":[{"delta":{"content":"Hi"}}]}',
            '{"id":"g","choices":[{"delta":{"content":"Hi"}}],"content":"Hi","reasoning":""}',
            id="content",
        ),
        pytest.param(
            '{"choices":[{"delta":{"content":"","reasoning":"Let me think"}}]}',
            '{"choices":[{"delta":{"content":"","reasoning":"Let me think"}}],'
            '"content":"","reasoning":"Let me think"}',
            id="reasoning-only",
        ),
        pytest.param(
            '{"choices":[],"usage":{"total_tokens":3}}  ',
            '{"choices":[],"usage":{"total_tokens":3},"content":"","reasoning":""}',
            id="empty-choices-trailing-space",
        ),
        pytest.param("{}", '{"content":"","reasoning":""}', id="empty-object"),
        pytest.param(
            '{"choices":[{"delta":{"content":null,"reasoning":null}}]}',
            '{"choices":[{"delta":{"content":null,"reasoning":null}}],"content":"","reasoning":""}',
            id="nulls",
        ),
        pytest.param(
            '{"choices":[{"delta":{"content":"  a\\nb  "}}]}',
            '{"choices":[{"delta":{"content":"  a\\nb  "}}],"content":"  a\\nb  ","reasoning":""}',
            id="whitespace-kept",
        ),
    ],
)
def test_chunk_event_data_table(text: str, expected: str) -> None:
    assert chunk_event_data(Chunk(text, json.loads(text))) == expected


# --- what a chunk means, and the answer -----------------------------------------------


def chunk_of(value: dict[str, t.Any]) -> Chunk:
    return Chunk.from_value(value)


def test_meanings_of_a_chunk() -> None:
    chunk = chunk_of(
        {
            "id": "gen-1",
            "model": "m/x",
            "choices": [{"delta": {"content": "a", "reasoning": "r"}, "finish_reason": "stop"}],
            "usage": {"cost": 0.1},
        }
    )
    assert (chunk.id, chunk.model, chunk.content, chunk.reasoning) == ("gen-1", "m/x", "a", "r")
    assert chunk.finish_reason == "stop" and chunk.usage == {"cost": 0.1}
    empty = chunk_of({"choices": []})
    assert (empty.content, empty.reasoning, empty.finish_reason, empty.citations) == (
        "",
        "",
        None,
        [],
    )


def citation(url: str, title: str = "T") -> dict[str, t.Any]:
    return {
        "type": "url_citation",
        "url_citation": {
            "url": url,
            "title": title,
            "content": "c",
            "start_index": 0,
            "end_index": 1,
        },
    }


def test_answer_gathers_citations_deduplicated_in_order() -> None:
    answer = Answer("m/asked")
    answer.add(chunk_of({"choices": [{"delta": {"annotations": [citation("https://b")]}}]}))
    answer.add(chunk_of({"choices": [{"delta": {"annotations": [citation("https://a")]}}]}))
    answer.add(chunk_of({"choices": [{"delta": {"annotations": [citation("https://b", "x")]}}]}))
    # on the message rather than the delta, as some providers send it
    answer.add(chunk_of({"choices": [{"message": {"annotations": [citation("https://c")]}}]}))
    answer.add(chunk_of({"choices": [{"delta": {"annotations": [{"type": "file"}]}}]}))
    assert [c["url"] for c in answer.citations] == ["https://b", "https://a", "https://c"]
    assert answer.citations[0]["title"] == "T"


def test_answer_merges_reasoning_details_by_index() -> None:
    answer = Answer()
    parts = [
        {"type": "reasoning.text", "index": 0, "text": "Let ", "format": None},
        {"type": "reasoning.text", "index": 0, "text": "me think", "signature": None},
        {"type": "reasoning.text", "index": 0, "text": "", "signature": "sig"},
        {"type": "reasoning.encrypted", "index": 1, "data": "[REDACTED]"},
        {"type": "reasoning.encrypted", "index": 1, "data": "abc"},
        {"type": "reasoning.summary", "summary": "no index"},
    ]
    for part in parts:
        answer.add(chunk_of({"choices": [{"delta": {"reasoning_details": [part]}}]}))
    assert answer.reasoning_details == [
        {"type": "reasoning.text", "index": 0, "text": "Let me think", "format": None,
         "signature": "sig"},
        {"type": "reasoning.encrypted", "index": 1, "data": "[REDACTED]abc"},
        {"type": "reasoning.summary", "summary": "no index"},
    ]  # fmt: skip


def test_done_data_reports_the_answer() -> None:
    answer = Answer("m/asked")
    answer.add(chunk_of({"id": "gen-9", "model": "m/real", "choices": [{"delta": {}}]}))
    answer.add(chunk_of({"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    answer.add(chunk_of({"choices": [], "usage": {"total_tokens": 5, "cost": 0.002}}))
    assert json.loads(done_data(answer)) == {
        "finishReason": "stop",
        "model": "m/real",
        "usage": {"total_tokens": 5, "cost": 0.002},
        "generationId": "gen-9",
        "citations": [],
        "reasoningDetails": [],
        "toolCalls": [],
    }
    assert json.loads(done_data(answer, "cancelled"))["finishReason"] == "cancelled"
    assert json.loads(done_data(Answer("m/asked")))["model"] == "m/asked"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"error": {"code": 502, "message": "boom"}, "choices": []}, "boom"),
        ({"choices": [{"delta": {}, "finish_reason": "error"}]}, None),
        ({"error": "plain"}, "plain"),
    ],
)
def test_stream_error(value: dict[str, t.Any], message: str | None) -> None:
    failure = stream_error(chunk_of(value))
    assert failure is not None and failure.code == "upstream_error"
    if message is not None:
        assert failure.message == message


def test_no_stream_error_in_a_normal_chunk() -> None:
    assert stream_error(chunk_of({"choices": [{"delta": {"content": "a"}}]})) is None


def _fragment(index: int | None, **fields: t.Any) -> dict[str, t.Any]:
    return {"choices": [{"delta": {"tool_calls": [{"index": index, **fields}]}}]}


@pytest.mark.parametrize(
    ("fragments", "calls"),
    [
        pytest.param([], [], id="none"),
        pytest.param(
            [
                _fragment(0, id="call_1", type="function",
                          function={"name": "get_weather", "arguments": ""}),
                _fragment(0, function={"arguments": '{"ci'}),
                _fragment(0, function={"arguments": 'ty": "Zürich"}'}),
            ],
            [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}],
            id="one call, arguments split",
        ),
        pytest.param(
            [
                _fragment(0, id="a", type="function", function={"name": "f", "arguments": "{"}),
                _fragment(1, id="b", type="function", function={"name": "g", "arguments": "["}),
                _fragment(0, function={"arguments": "}"}),
                _fragment(1, function={"arguments": "]"}),
            ],
            [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
             {"id": "b", "type": "function", "function": {"name": "g", "arguments": "[]"}}],
            id="two parallel calls interleaved",
        ),
        pytest.param(
            [_fragment(None, id="x", type="function", function={"name": "h", "arguments": "{}"})],
            [{"id": "x", "type": "function", "function": {"name": "h", "arguments": "{}"}}],
            id="one-shot without an index",
        ),
    ],
)  # fmt: skip
def test_tool_calls_are_assembled_by_index(
    fragments: list[dict[str, t.Any]], calls: list[dict[str, t.Any]]
) -> None:
    answer = Answer("m")
    for fragment in fragments:
        answer.add(chunk_of(fragment))
    assert json.loads(done_data(answer))["toolCalls"] == calls


def test_images_of_a_chunk() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    chunk = chunk_of({"choices": [{"delta": {"images": [image, {"type": "image_url"}, 3]}}]})
    assert chunk.images == [image]
    assert chunk_of({"choices": [{"delta": {"content": "x"}}]}).images == []


def _tool_call_stream(calls: int) -> tuple[bytes, list[dict[str, t.Any]]]:
    """An SSE body of ``calls`` parallel tool calls, their argument fragments
    interleaved, with multi-byte characters; and the calls it adds up to.
    """
    expected = []
    events = []
    for index in range(calls):
        arguments = json.dumps({"city": f"Zürich {index} 😀", "days": index}, ensure_ascii=False)
        expected.append(
            {"id": f"call_{index}", "type": "function",
             "function": {"name": f"tool_{index}", "arguments": arguments}}
        )  # fmt: skip
        first = {"index": index, "id": f"call_{index}", "type": "function",
                 "function": {"name": f"tool_{index}", "arguments": ""}}  # fmt: skip
        events.append((index, 0, first))
        for piece, start in enumerate(range(0, len(arguments), 3), 1):
            fragment = {"index": index, "function": {"arguments": arguments[start : start + 3]}}
            events.append((index, piece, fragment))
    events.sort(key=lambda item: (item[1], item[0]))  # round-robin over the calls
    body = b"".join(
        b"data: "
        + json.dumps(
            {"choices": [{"delta": {"tool_calls": [fragment]}}]}, ensure_ascii=False
        ).encode()
        + b"\n\n"
        for _, _, fragment in events
    )
    return body, expected


@pytest.mark.parametrize("block_size", [1, 2, 3, 5, 7, 4096])
def test_tool_calls_split_mid_utf8_across_reads_are_assembled(block_size: int) -> None:
    # 12 parallel calls; every block boundary cuts somewhere, inside characters too
    body, expected = _tool_call_stream(12)
    splitter = EventSplitter()
    answer = Answer("m")
    for offset in range(0, len(body), block_size):
        for data in splitter.feed(body[offset : offset + block_size]):
            chunk = parse_chunk(data)
            assert chunk is not None
            answer.add(chunk)
    assert answer.tool_calls.calls() == expected
