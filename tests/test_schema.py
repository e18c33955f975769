"""Validation of the /prepare body: every error names its field."""

from __future__ import annotations

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
