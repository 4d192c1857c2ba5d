"""Breaking-change rules of the baseline diff, on hand-written documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from falemu.contract.diff import diff_openapi, load_baseline, write_baseline
from falemu.errors import UsageError


def doc() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/greet": {
                "post": {
                    "parameters": [{"name": "lang", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Out"}}},
                        },
                        "422": {"description": "bad"},
                    },
                }
            },
            "/health": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {
            "schemas": {
                "In": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 100},
                        "steps": {"type": "number"},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "opts": {"allOf": [{"$ref": "#/components/schemas/Opts"}]},
                    },
                },
                "Opts": {"type": "object", "properties": {"seed": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}},
                "Out": {
                    "type": "object",
                    "required": ["message", "images"],
                    "properties": {
                        "message": {"type": "string"},
                        "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
                    },
                },
                "Image": {"type": "object", "properties": {"url": {"type": "string"}, "width": {"type": "integer"}}},
            }
        },
    }


def kinds(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c.kind, c.location) for c in diff_openapi(old, new)]


def test_identical_documents_have_no_changes() -> None:
    assert diff_openapi(doc(), doc()) == []


def test_additions_are_not_breaking() -> None:
    new = doc()
    new["paths"]["/extra"] = {"get": {"responses": {"200": {"description": "ok"}}}}
    new["components"]["schemas"]["In"]["properties"]["extra"] = {"type": "string"}
    new["components"]["schemas"]["Out"]["properties"]["extra"] = {"type": "string"}
    new["components"]["schemas"]["In"]["properties"]["mode"]["enum"].append("c")
    new["components"]["schemas"]["In"]["properties"]["steps"]["type"] = ["number", "null"]
    assert diff_openapi(doc(), new) == []


def test_removed_operation() -> None:
    new = doc()
    del new["paths"]["/health"]
    changes = diff_openapi(doc(), new)
    assert [(c.kind, c.operation) for c in changes] == [("operation-removed", "GET /health")]


def test_removed_response_code() -> None:
    new = doc()
    del new["paths"]["/greet"]["post"]["responses"]["422"]
    assert kinds(doc(), new) == [("response-code-removed", "response.422")]


def test_removed_response_field_nested_in_array_items() -> None:
    new = doc()
    del new["components"]["schemas"]["Image"]["properties"]["width"]
    assert kinds(doc(), new) == [("response-field-removed", "response.200.images[].width")]


def test_removed_and_newly_required_request_fields() -> None:
    new = doc()
    schema = new["components"]["schemas"]["In"]
    del schema["properties"]["steps"]
    schema["required"].append("mode")
    schema["properties"]["prompt"] = {"type": "string"}
    schema["required"].append("prompt")
    assert kinds(doc(), new) == [
        ("request-field-removed", "request.body.steps"),
        ("request-field-required", "request.body.mode"),
        ("request-field-required", "request.body.prompt"),
    ]


def test_narrowed_request_types() -> None:
    new = doc()
    props = new["components"]["schemas"]["In"]["properties"]
    props["steps"]["type"] = "integer"
    props["name"]["maxLength"] = 10
    props["mode"]["enum"] = ["a"]
    props["opts"] = {"allOf": [{"$ref": "#/components/schemas/Opts2"}]}
    new["components"]["schemas"]["Opts2"] = {"type": "object", "properties": {"seed": {"type": "integer"}}}
    changes = diff_openapi(doc(), new)
    assert {(c.kind, c.location) for c in changes} == {
        ("request-type-narrowed", "request.body.name"),
        ("request-type-narrowed", "request.body.steps"),
        ("request-type-narrowed", "request.body.mode"),
        ("request-type-narrowed", "request.body.opts.seed"),
    }
    messages = " ".join(c.message for c in changes)
    assert "number -> integer" in messages
    assert "maxLength 100 -> 10" in messages
    assert "['b']" in messages


def test_widening_a_request_type_is_fine_but_changing_a_response_type_is_not() -> None:
    new = doc()
    new["components"]["schemas"]["In"]["properties"]["name"]["type"] = ["string", "integer"]
    new["components"]["schemas"]["Out"]["properties"]["message"]["type"] = ["string", "null"]
    assert kinds(doc(), new) == [("response-type-changed", "response.200.message")]


def test_parameters() -> None:
    new = doc()
    params = new["paths"]["/greet"]["post"]["parameters"]
    params[0]["required"] = True
    params.append({"name": "v", "in": "query", "required": True, "schema": {"type": "string"}})
    assert kinds(doc(), new) == [("parameter-required", "query.lang"), ("parameter-required", "query.v")]
    gone = doc()
    gone["paths"]["/greet"]["post"]["parameters"] = []
    assert kinds(doc(), gone) == [("parameter-removed", "query.lang")]


def test_response_field_becoming_optional() -> None:
    new = doc()
    new["components"]["schemas"]["Out"]["required"] = ["message"]
    assert kinds(doc(), new) == [("response-field-optional", "response.200.images")]


def test_recursive_schemas_terminate() -> None:
    old = doc()
    old["components"]["schemas"]["Image"]["properties"]["child"] = {"$ref": "#/components/schemas/Image"}
    new = copy.deepcopy(old)
    assert diff_openapi(old, new) == []


def test_baseline_files(tmp_path: Path) -> None:
    path = tmp_path / "base.json"
    assert load_baseline(path, "a") is None
    write_baseline(path, {"a": doc()})
    assert json.loads(path.read_text())["openapi"] == "3.1.0"  # one app: the plain document
    assert load_baseline(path, "a") == doc()
    assert load_baseline(path, "b") == doc()  # a plain document is the baseline of whichever app
    multi = tmp_path / "multi.json"
    write_baseline(multi, {"a": doc(), "b": {"openapi": "3.0.3"}})
    write_baseline(multi, {"c": {"openapi": "3.0.0"}})  # merges
    assert set(json.loads(multi.read_text())["apps"]) == {"a", "b", "c"}
    assert load_baseline(multi, "b") == {"openapi": "3.0.3"}
    assert load_baseline(multi, "z") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError, match="not readable JSON"):
        load_baseline(bad, "a")
