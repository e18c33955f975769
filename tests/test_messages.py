"""UIMessage[] → upstream messages (ngai_chat.messages), SPEC §3 ``POST /chat``'s table."""

from __future__ import annotations

import typing as t

import pytest

from ngai_chat.errors import InvalidRequest
from ngai_chat.messages import to_upstream

PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0x"


def user(*parts: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"id": "u", "role": "user", "parts": list(parts)}


def assistant(*parts: dict[str, t.Any], metadata: t.Any = None) -> dict[str, t.Any]:
    message: dict[str, t.Any] = {"id": "a", "role": "assistant", "parts": list(parts)}
    if metadata is not None:
        message["metadata"] = metadata
    return message


def text(value: str) -> dict[str, t.Any]:
    return {"type": "text", "text": value}


WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
}

CASES: list[tuple[str, list[dict[str, t.Any]], list[dict[str, t.Any]]]] = [
    ("one text part is a string", [user(text("Hi"))], [{"role": "user", "content": "Hi"}]),
    (
        "system and assistant text",
        [
            {"id": "s", "role": "system", "parts": [text("Be brief.")]},
            user(text("Hi")),
            assistant({"type": "step-start"}, {"type": "reasoning", "text": "hmm"}, text("Hey")),
        ],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hey"},
        ],
    ),
    (
        "several text parts are content parts, in order",
        [user(text("a"), text(" b"))],
        [{"role": "user", "content": [text("a"), text(" b")]}],
    ),
    (
        "images and a PDF",
        [
            user(
                text("What is this?"),
                {"type": "file", "mediaType": "image/png", "url": PNG, "filename": "x.png"},
                {"type": "file", "mediaType": "image/jpeg", "url": "https://e.x/a.jpg"},
                {"type": "file", "mediaType": "application/pdf", "url": PDF, "filename": "a.pdf"},
                {"type": "file", "mediaType": "application/pdf", "url": PDF},
            )
        ],
        [
            {
                "role": "user",
                "content": [
                    text("What is this?"),
                    {"type": "image_url", "image_url": {"url": PNG}},
                    {"type": "image_url", "image_url": {"url": "https://e.x/a.jpg"}},
                    {"type": "file", "file": {"filename": "a.pdf", "file_data": PDF}},
                    {"type": "file", "file": {"filename": "document.pdf", "file_data": PDF}},
                ],
            }
        ],
    ),
    (
        "a file alone is a list too",
        [user({"type": "file", "mediaType": "image/webp", "url": PNG})],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}],
    ),
    (
        "ignored parts",
        [
            assistant(
                {"type": "step-start"},
                {"type": "source-url", "sourceId": "s", "url": "https://e.x"},
                {"type": "source-document", "sourceId": "d", "mediaType": "x", "title": "t"},
                {"type": "data-weather", "data": {"t": 1}},
                text("ok"),
                {"type": "tool-weather", "toolCallId": "c0", "state": "input-streaming"},
            )
        ],
        [{"role": "assistant", "content": "ok"}],
    ),
    (
        "a tool call with its output, then the next step's text",
        [
            user(text("Weather?")),
            assistant(
                {"type": "step-start"},
                text("Let me look."),
                {
                    "type": "tool-weather",
                    "toolCallId": "call_1",
                    "state": "output-available",
                    "input": {"city": "Paris"},
                    "output": {"temp": 21, "sky": "clear"},
                },
                {"type": "step-start"},
                text("21 °C and clear."),
            ),
        ],
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [WEATHER_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21,"sky":"clear"}'},
            {"role": "assistant", "content": "21 °C and clear."},
        ],
    ),
    (
        "input-available, output-error and dynamic-tool; reasoning details from metadata",
        [
            assistant(
                {"type": "reasoning", "text": "thinking"},
                {
                    "type": "tool-weather",
                    "toolCallId": "call_1",
                    "state": "input-available",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "dynamic-tool",
                    "toolName": "search",
                    "toolCallId": "call_2",
                    "state": "output-error",
                    "input": {"q": "x"},
                    "errorText": "search is down",
                },
                metadata={
                    "model": "m",
                    "reasoningDetails": [{"type": "reasoning.text", "text": "t"}],
                },
            )
        ],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    WEATHER_CALL,
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"q":"x"}'},
                    },
                ],
                "reasoning_details": [{"type": "reasoning.text", "text": "t"}],
            },
            {"role": "tool", "tool_call_id": "call_2", "content": "search is down"},
        ],
    ),
    (
        "reasoning details on an assistant message with no text",
        [assistant({"type": "reasoning", "text": "x"}, metadata={"reasoningDetails": [{"i": 1}]})],
        [{"role": "assistant", "content": "", "reasoning_details": [{"i": 1}]}],
    ),
    (
        "empty or absent reasoning details, other metadata ignored",
        [
            assistant(text("a"), metadata={"reasoningDetails": [], "usage": {}}),
            assistant(text("b"), metadata={"model": "m"}),
        ],
        [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
    ),
]


@pytest.mark.parametrize(
    ("messages", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_to_upstream(messages: list[dict[str, t.Any]], expected: list[dict[str, t.Any]]) -> None:
    assert to_upstream(messages) == expected


BAD: list[tuple[t.Any, str]] = [
    (None, "messages"),
    ([], "messages"),
    (["x"], "messages[0]"),
    ([{"role": "tool", "parts": []}], "messages[0].role"),
    ([{"role": "user"}], "messages[0].parts"),
    ([user(text("a")), user({"type": "image", "url": PNG})], "messages[1].parts[0].type"),
    ([user("text")], "messages[0].parts[0]"),
    ([user({"text": "no type"})], "messages[0].parts[0].type"),
    ([user({"type": "text", "text": 5})], "messages[0].parts[0].text"),
    (
        [user({"type": "file", "mediaType": "text/plain", "url": "data:,x"})],
        "messages[0].parts[0].mediaType",
    ),
    ([user({"type": "file", "url": PNG})], "messages[0].parts[0].mediaType"),
    ([user({"type": "file", "mediaType": "image/png"})], "messages[0].parts[0].url"),
    (
        [user({"type": "tool-x", "toolCallId": "c", "state": "input-available"})],
        "messages[0].parts[0].type",
    ),
    (
        [assistant({"type": "tool-x", "state": "input-available", "input": {}})],
        "messages[0].parts[0].toolCallId",
    ),
    (
        [assistant({"type": "dynamic-tool", "toolCallId": "c", "state": "output-available"})],
        "messages[0].parts[0].toolName",
    ),
    (
        [assistant(text("a"), metadata={"reasoningDetails": "x"})],
        "messages[0].metadata.reasoningDetails",
    ),
]


@pytest.mark.parametrize(("messages", "field"), BAD, ids=[case[1] for case in BAD])
def test_bad_messages_name_the_field(messages: t.Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_upstream(messages)
    assert info.value.field == field
    assert field in info.value.message
