"""``/openapi.json`` says what the code does, because it is built from the code
(issue 9, "one source per fact"): the error tree, the request schema, the view's
``free`` values.
"""

from __future__ import annotations

import typing as t

import pytest

from ngai_chat import errors
from ngai_chat.catalog import FREE_VALUES
from ngai_chat.openapi import PREPARE_ERRORS
from ngai_chat.schema import IMAGE_TYPES
from ngai_chat.schema import MAX_MODEL_LENGTH
from ngai_chat.schema import MESSAGE_KEYS
from ngai_chat.schema import OWN_KEYS
from ngai_chat.schema import PART_TYPES
from ngai_chat.schema import PASSTHROUGH
from tests.support.scripted import ScriptedUpstream


def all_errors() -> set[type[errors.ApiError]]:
    seen: set[type[errors.ApiError]] = set()
    pending = [errors.ApiError]
    while pending:
        cls = pending.pop()
        seen.add(cls)
        pending.extend(cls.__subclasses__())
    return seen


@pytest.fixture
def doc(client: t.Any) -> dict[str, t.Any]:
    return t.cast(dict[str, t.Any], client.get("/openapi.json").get_json())


def test_error_codes_are_the_error_tree(doc: dict[str, t.Any]) -> None:
    enum = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert set(enum) == {cls.code for cls in all_errors()}
    assert len(enum) == len(set(enum))
    assert "budget_exceeded" in enum


def test_each_error_response_has_its_classes_status(doc: dict[str, t.Any]) -> None:
    by_code = {cls.code: cls for cls in all_errors()}
    checked = 0
    for path in doc["paths"].values():
        for operation in path.values():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if not schema or "allOf" not in schema:
                    continue
                error = schema["properties"]["error"]["properties"]
                assert error["status"]["const"] == int(status)
                for code in error["code"]["enum"]:
                    assert by_code[code].status == int(status), code
                    checked += 1
    assert checked > 20


def test_prepare_documents_every_error_it_may_answer(doc: dict[str, t.Any]) -> None:
    responses = doc["paths"]["/prepare"]["post"]["responses"]
    assert "budget_exceeded" in responses["429"]["description"]
    assert "rate_limited" in responses["429"]["description"]
    assert "Retry-After" in responses["429"]["description"]
    for cls in PREPARE_ERRORS:
        assert cls.code in responses[str(cls.status)]["description"]


def test_request_keys_are_the_schemas(doc: dict[str, t.Any]) -> None:
    schemas = doc["components"]["schemas"]
    request = schemas["PrepareRequest"]["properties"]
    assert set(request) == set(OWN_KEYS) | set(PASSTHROUGH)
    assert request["model"]["maxLength"] == MAX_MODEL_LENGTH
    assert set(schemas["Message"]["properties"]) == set(MESSAGE_KEYS)


def test_stream_events_document_every_field(doc: dict[str, t.Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert {"content", "reasoning"} <= set(schemas["ChunkEvent"]["required"])
    done = set(schemas["DoneEvent"]["properties"])
    assert {"finishReason", "model", "usage"} < done
    assert {"generationId", "citations", "reasoningDetails"} < done
    assert done == set(schemas["DoneEvent"]["required"])


def test_free_values_are_the_views(make_app: t.Any, doc: dict[str, t.Any]) -> None:
    (free,) = doc["paths"]["/models"]["get"]["parameters"]
    assert free["schema"]["enum"] == list(FREE_VALUES)
    priced = {"prompt": "0.1", "completion": "0.2"}
    zero = {"prompt": "0", "completion": "0"}
    models = {"data": [{"id": "a/free", "pricing": zero}, {"id": "b/paid", "pricing": priced}]}
    client = make_app(ScriptedUpstream(models=models)).test_client()
    for value in [*FREE_VALUES, *(v.upper() for v in FREE_VALUES)]:
        ids = [m["id"] for m in client.get(f"/models?free={value}").get_json()["data"]]
        assert ids == ["a/free"], value
    for value in ("0", "no", "free"):
        ids = [m["id"] for m in client.get(f"/models?free={value}").get_json()["data"]]
        assert ids == ["a/free", "b/paid"], value


def test_content_parts_and_tool_calls_are_documented(doc: dict[str, t.Any]) -> None:
    # issue 16: the part types schema.py takes, and done.toolCalls
    schemas = doc["components"]["schemas"]
    parts = schemas["ContentPart"]["oneOf"]
    assert [part["properties"]["type"]["const"] for part in parts] == list(PART_TYPES)
    image = parts[1]["properties"]["image_url"]["properties"]["url"]["anyOf"][1]["pattern"]
    assert all(kind in image for kind in IMAGE_TYPES)
    assert schemas["Message"]["properties"]["content"]["oneOf"][1]["items"] == {
        "$ref": "#/components/schemas/ContentPart"
    }
    assert schemas["DoneEvent"]["properties"]["toolCalls"]["items"] == {
        "$ref": "#/components/schemas/ToolCall"
    }
    assert "NGAI_MAX_CLIENT_BYTES" in schemas["ContentPart"]["description"]
    assert "delta.images" in schemas["ChunkEvent"]["description"]


def test_every_route_of_every_door_is_documented(app: t.Any, doc: dict[str, t.Any]) -> None:
    """Each route the blueprint serves (the three doors and the rest) has its path and
    methods in the document; static files and /v1's catch-all for 404s aside.
    """
    documented = {
        path: {method.upper() for method in operations} for path, operations in doc["paths"].items()
    }
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("ngai_chat.") or rule.endpoint.endswith("static"):
            continue
        if rule.endpoint == "ngai_chat.openai.unknown":  # /v1's 404s, in OpenAI's shape
            continue
        path = rule.rule.replace("<ngai_chat_any:session_id>", "{sessionId}")
        path = path.replace("<ngai_chat_any:chat_id>", "{chatId}")
        assert path in documented, f"{rule.rule} ({rule.endpoint}) is not in /openapi.json"
        served = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        assert served <= documented[path], f"{rule.rule}: {served - documented[path]}"
