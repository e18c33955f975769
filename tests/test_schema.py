"""Validation of the /prepare body: every error names its field."""

from __future__ import annotations

import base64
import json
import time

import pytest

from ngai_chat.errors import InvalidJson
from ngai_chat.errors import InvalidRequest
from ngai_chat.schema import PASSTHROUGH
from ngai_chat.schema import parse_json
from ngai_chat.schema import validate

USER = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"a": NaN}', b"[1,]", b"{'a': 1}"]
)
def test_parse_json_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidJson) as info:
        parse_json(raw)
    assert info.value.status == 400 and info.value.code == "invalid_json"


def test_parse_json_accepts_unicode() -> None:
    assert parse_json('{"a": "é😀"}'.encode()) == {"a": "é😀"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("text", "body"),
        (None, "body"),
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": {"role": "user"}}, "messages"),
        ({"messages": ["Hi"]}, "messages[0]"),
        ({"messages": [USER, {"content": "x"}]}, "messages[1].role"),
        ({"messages": [USER, USER, {"role": "robot", "content": "x"}]}, "messages[2].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        ({"messages": [{**USER, "name": 3}]}, "messages[0].name"),
        ({"messages": [{**USER, "tool_calls": {}}]}, "messages[0].tool_calls"),
        ({"messages": [{**USER, "tool_call_id": 1}]}, "messages[0].tool_call_id"),
        ({"messages": [{**USER, "id": "m1"}]}, "messages[0].id"),
        ({"messages": [USER], "model": 5}, "model"),
        ({"messages": [USER], "model": ""}, "model"),
        ({"messages": [USER], "model": "x" * 201}, "model"),
        ({"messages": [USER], "temperature": "hot"}, "temperature"),
        ({"messages": [USER], "temperature": True}, "temperature"),
        ({"messages": [USER], "max_tokens": 1.5}, "max_tokens"),
        ({"messages": [USER], "stop": [1]}, "stop"),
        ({"messages": [USER], "models": "a/b"}, "models"),
        ({"messages": [USER], "tools": {}}, "tools"),
        ({"messages": [USER], "frobnicate": 1}, "frobnicate"),
    ],
)
def test_validate_names_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(body)
    assert info.value.field == field
    assert info.value.to_dict()["field"] == field
    assert info.value.code == "invalid_request" and info.value.status == 400
    assert len(info.value.message) > 20


def test_unknown_key_message_names_the_key() -> None:
    with pytest.raises(InvalidRequest, match="'frobnicate'"):
        validate({"messages": [USER], "frobnicate": 1})


def test_valid_request_keeps_everything() -> None:
    body = {
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "t1"},
        ],
        "temperature": 0.7,
        "max_tokens": 512,
        "stop": ["\n\n"],
        "stream": False,
        "provider": {"order": ["OpenAI"]},
    }
    chat = validate(body)
    assert chat.model == "openai/gpt-4o"
    assert chat.messages == body["messages"]
    assert chat.params == {
        "temperature": 0.7,
        "max_tokens": 512,
        "stop": ["\n\n"],
        "provider": {"order": ["OpenAI"]},
    }


def test_model_is_optional() -> None:
    assert validate({"messages": [USER]}).model is None


def test_every_spec_passthrough_key_is_accepted() -> None:
    spec = [
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "top_a",
        "max_tokens",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "reasoning",
        "provider",
        "models",
        "transforms",
        "user",
        "plugins",
        "session_id",
        "parallel_tool_calls",
        "modalities",
        "image_config",
        "max_completion_tokens",
    ]
    assert set(spec) == set(PASSTHROUGH)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"messages": [], "logit_bias": {"1": 1e999}}', "logit_bias.1"),
        (b'{"temperature": -1e999}', "temperature"),
        (
            b'{"messages": [{"role": "user", "content": [{"x": [0, 1E400]}]}]}',
            "messages[0].content[0].x[1]",
        ),
        (b'{"tools": [{"a b": 2e308}]}', 'tools[0]["a b"]'),
        (b"1e999", "body"),
    ],
)
def test_parse_json_names_a_non_finite_number(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_json(raw)
    assert info.value.field == field and info.value.code == "invalid_request"
    assert field in info.value.message and "finite" in info.value.message


def test_parse_json_keeps_large_finite_numbers() -> None:
    assert parse_json(b'{"a": 1.7e308, "b": 1' + b"0" * 400 + b"}")["a"] == 1.7e308


def test_reasoning_details_pass_on_assistant_messages_only() -> None:
    details = [{"type": "reasoning.text", "text": "why", "index": 0}]
    assistant = {"role": "assistant", "content": "A", "reasoning_details": details}
    chat = validate({"messages": [USER, assistant, USER]})
    assert chat.messages[1]["reasoning_details"] == details
    with pytest.raises(InvalidRequest) as info:
        validate({"messages": [{**USER, "reasoning_details": details}]})
    assert info.value.field == "messages[0].reasoning_details"
    with pytest.raises(InvalidRequest) as info:
        validate({"messages": [{**assistant, "reasoning_details": "x"}]})
    assert info.value.field == "messages[0].reasoning_details"


def test_plugins_and_session_id_pass_through() -> None:
    body = {"messages": [USER], "plugins": [{"id": "web"}], "session_id": "conv-1"}
    assert validate(body).params == {"plugins": [{"id": "web"}], "session_id": "conv-1"}
    for key, bad in (("plugins", {"id": "web"}), ("session_id", 7)):
        with pytest.raises(InvalidRequest) as info:
            validate({"messages": [USER], key: bad})
        assert info.value.field == key


# --- content parts (issue 16) --------------------------------------------------------

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(64)).decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4\n%%EOF").decode()
WAV = base64.b64encode(b"RIFF" + bytes(40)).decode()


def _with_parts(*parts: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "Look"}, *parts]}]}


def _image(url: object, **extra: object) -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def _file(file_data: object, filename: object = "a.pdf") -> dict[str, object]:
    return {"type": "file", "file": {"filename": filename, "file_data": file_data}}


def _audio(data: object, fmt: object = "wav") -> dict[str, object]:
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


@pytest.mark.parametrize(
    "part",
    [
        pytest.param(_image("https://example.com/cat.png"), id="image https"),
        pytest.param(_image(PNG, detail="low"), id="image png data URL"),
        pytest.param(_image(PNG.replace("image/png", "image/jpeg")), id="image jpeg"),
        pytest.param(_image(PNG.replace("image/png", "image/webp")), id="image webp"),
        pytest.param(_image(PNG.replace("image/png", "image/gif")), id="image gif"),
        pytest.param(_file(PDF), id="pdf data URL"),
        pytest.param(_file("https://example.com/paper.pdf"), id="pdf https"),
        pytest.param(_audio(WAV), id="audio"),
        pytest.param({"type": "text", "text": "", "cache_control": {"type": "ephemeral"}},
                     id="text with cache_control"),
    ],
)  # fmt: skip
def test_content_parts_accepted(part: dict[str, object]) -> None:
    body = _with_parts(part)
    assert validate(body).messages == body["messages"]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        pytest.param({"type": "text", "text": 5}, "text", id="text not a string"),
        pytest.param({"type": "text"}, "text", id="text missing"),
        pytest.param({"type": "image_url", "image_url": "https://x/y.png"}, "image_url",
                     id="image_url not an object"),
        pytest.param(_image(None), "image_url.url", id="image url missing"),
        pytest.param(_image("http://example.com/cat.png"), "image_url.url", id="image http"),
        pytest.param(_image("https://"), "image_url.url", id="image https empty"),
        pytest.param(_image("file:///etc/passwd"), "image_url.url", id="image file URL"),
        pytest.param(_image(PNG.replace("image/png", "image/svg+xml")), "image_url.url",
                     id="image svg"),
        pytest.param(_image(PNG.replace("image/png", "application/pdf")), "image_url.url",
                     id="image pdf media type"),
        pytest.param(_image("data:image/png;base64,"), "image_url.url", id="image empty base64"),
        pytest.param(_image("data:image/png;base64,iVBOR!!!"), "image_url.url",
                     id="image bad base64 characters"),
        pytest.param(_image("data:image/png;base64,iVBORw0"), "image_url.url",
                     id="image bad base64 padding"),
        pytest.param(_image("data:image/png," + "x" * 10), "image_url.url", id="image not base64"),
        pytest.param(_image("data:image/png;base64,aGk=\u00e9"), "image_url.url",
                     id="image non-ASCII base64"),
        pytest.param(_image(PNG, detail="ultra"), "image_url.detail", id="image detail"),
        pytest.param({"type": "file", "file": None}, "file", id="file not an object"),
        pytest.param(_file(PDF, filename=""), "file.filename", id="file without a name"),
        pytest.param(_file(PDF.replace("application/pdf", "application/zip")), "file.file_data",
                     id="file zip"),
        pytest.param(_file("data:application/pdf;base64,JVBERi0=="), "file.file_data",
                     id="file bad base64"),
        pytest.param(_file(7), "file.file_data", id="file data not a string"),
        pytest.param(_audio("data:audio/wav;base64," + WAV), "input_audio.data",
                     id="audio as a data URL"),
        pytest.param(_audio("!!"), "input_audio.data", id="audio bad base64"),
        pytest.param(_audio(WAV, fmt=""), "input_audio.format", id="audio without format"),
        pytest.param({"type": "video_url", "video_url": {"url": "https://x"}}, "type",
                     id="unknown part type"),
    ],
)  # fmt: skip
def test_content_parts_refused_name_the_field(part: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(_with_parts(part))
    assert info.value.field == f"messages[0].content[1].{field}"
    assert info.value.code == "invalid_request" and info.value.status == 400
    assert info.value.field in info.value.message


def test_a_10_mb_attachment_validates_in_well_under_a_second() -> None:
    photo = "data:image/jpeg;base64," + base64.b64encode(bytes(range(256)) * 30_000).decode()
    raw = json.dumps(_with_parts(_image(photo), _file(PDF))).encode()
    assert len(raw) > 10_000_000
    started = time.perf_counter()
    validate(parse_json(raw))
    assert time.perf_counter() - started < 0.5
