"""Breaking changes between a recorded OpenAPI document (the baseline) and the app's current one.

A change is breaking when a caller written against the baseline can fail against the new app:

- an operation or a documented response code is gone;
- a request field or parameter is removed, or becomes required (a new required field too);
- a request field's type or bounds narrow (``number`` -> ``integer``, an enum loses values,
  ``maxLength`` shrinks, ...);
- a response field is removed, or its type changes to one the caller did not expect.

Only local ``$ref`` s are followed; ``allOf`` parts are merged and ``anyOf``/``oneOf`` count as unions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from falemu.contract.openapi import iter_operations, resolve
from falemu.errors import UsageError

MAX_DEPTH = 12


@dataclass(frozen=True)
class Change:
    kind: str  # operation-removed, response-code-removed, request-field-removed, ...
    operation: str
    location: str  # "request.body.options.steps", "response.200.items[].url", "query.limit"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "operation": self.operation, "location": self.location, "message": self.message}


def diff_openapi(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every breaking change from ``old`` to ``new``, in document order."""
    changes: list[Change] = []
    new_ops = {(m, p): op for m, p, op in iter_operations(new)}
    for method, path, old_op in iter_operations(old):
        label = f"{method} {path}"
        new_op = new_ops.get((method, path))
        if new_op is None:
            changes.append(Change("operation-removed", label, "", f"operation {label} was removed"))
            continue
        changes.extend(_diff_parameters(old, new, label, old_op, new_op))
        changes.extend(_diff_request_body(old, new, label, old_op, new_op))
        changes.extend(_diff_responses(old, new, label, old_op, new_op))
    return changes


# --- parameters --------------------------------------------------------------------------------------


def _parameters(document: dict[str, Any], operation: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    params: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in operation.get("parameters") or []:
        param = resolve(document, raw)
        if isinstance(param, dict) and "name" in param and "in" in param:
            params[(str(param["in"]), str(param["name"]))] = param
    return params


def _diff_parameters(
    old_doc: dict[str, Any], new_doc: dict[str, Any], label: str, old_op: dict[str, Any], new_op: dict[str, Any]
) -> Iterator[Change]:
    old_params = _parameters(old_doc, old_op)
    new_params = _parameters(new_doc, new_op)
    for key, param in old_params.items():
        where = f"{key[0]}.{key[1]}"
        if key not in new_params:
            if key[0] != "header":
                yield Change("parameter-removed", label, where, f"{key[0]} parameter {key[1]!r} was removed")
            continue
        if new_params[key].get("required") and not param.get("required"):
            yield Change("parameter-required", label, where, f"{key[0]} parameter {key[1]!r} became required")
        yield from _diff_schema(
            old_doc, new_doc, label, where, param.get("schema"), new_params[key].get("schema"), "request", 0
        )
    for key, param in new_params.items():
        if key not in old_params and param.get("required"):
            where = f"{key[0]}.{key[1]}"
            yield Change("parameter-required", label, where, f"new required {key[0]} parameter {key[1]!r}")


# --- request body ------------------------------------------------------------------------------------


def _json_schema_of(document: dict[str, Any], holder: Any) -> Any:
    holder = resolve(document, holder)
    if not isinstance(holder, dict):
        return None
    content = holder.get("content")
    if not isinstance(content, dict) or not content:
        return None
    for media, media_obj in content.items():
        if "json" in media and isinstance(media_obj, dict):
            return media_obj.get("schema")
    first = next(iter(content.values()))
    return first.get("schema") if isinstance(first, dict) else None


def _diff_request_body(
    old_doc: dict[str, Any], new_doc: dict[str, Any], label: str, old_op: dict[str, Any], new_op: dict[str, Any]
) -> Iterator[Change]:
    old_body = resolve(old_doc, old_op.get("requestBody"))
    new_body = resolve(new_doc, new_op.get("requestBody"))
    if (
        isinstance(new_body, dict)
        and new_body.get("required")
        and not (isinstance(old_body, dict) and old_body.get("required"))
    ):
        yield Change("request-body-required", label, "request.body", "the request body became required")
    if not isinstance(old_body, dict) or not isinstance(new_body, dict):
        return
    yield from _diff_schema(
        old_doc,
        new_doc,
        label,
        "request.body",
        _json_schema_of(old_doc, old_body),
        _json_schema_of(new_doc, new_body),
        "request",
        0,
    )


# --- responses ---------------------------------------------------------------------------------------


def _diff_responses(
    old_doc: dict[str, Any], new_doc: dict[str, Any], label: str, old_op: dict[str, Any], new_op: dict[str, Any]
) -> Iterator[Change]:
    old_responses = old_op.get("responses") or {}
    new_responses = new_op.get("responses") or {}
    for code, old_resp in old_responses.items():
        if code not in new_responses:
            if str(code) != "default":
                yield Change(
                    "response-code-removed", label, f"response.{code}", f"response code {code} is no longer documented"
                )
            continue
        yield from _diff_schema(
            old_doc,
            new_doc,
            label,
            f"response.{code}",
            _json_schema_of(old_doc, old_resp),
            _json_schema_of(new_doc, new_responses[code]),
            "response",
            0,
        )


# --- schemas -----------------------------------------------------------------------------------------


@dataclass
class _Shape:
    types: set[str]
    properties: dict[str, Any]
    required: set[str]
    items: Any
    enum: list[Any] | None
    bounds: dict[str, Any]


_BOUND_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
)


def _shape(document: dict[str, Any], schema: Any, depth: int = 0) -> _Shape:
    shape = _Shape(set(), {}, set(), None, None, {})
    schema = resolve(document, schema)
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return shape
    raw_type = schema.get("type")
    if isinstance(raw_type, str):
        shape.types.add(raw_type)
    elif isinstance(raw_type, list):
        shape.types.update(str(t) for t in raw_type)
    if schema.get("nullable") is True:
        shape.types.add("null")
    if isinstance(schema.get("properties"), dict):
        shape.properties.update(schema["properties"])
    if isinstance(schema.get("required"), list):
        shape.required.update(str(r) for r in schema["required"])
    if "items" in schema:
        shape.items = schema["items"]
    if isinstance(schema.get("enum"), list):
        shape.enum = list(schema["enum"])
    if "const" in schema:
        shape.enum = [schema["const"]]
    for key in _BOUND_KEYS:
        if key in schema:
            shape.bounds[key] = schema[key]
    for part in schema.get("allOf") or []:
        sub = _shape(document, part, depth + 1)
        shape.types = (shape.types & sub.types) if (shape.types and sub.types) else (shape.types | sub.types)
        shape.properties.update(sub.properties)
        shape.required |= sub.required
        shape.items = shape.items if shape.items is not None else sub.items
        shape.enum = shape.enum if shape.enum is not None else sub.enum
        shape.bounds = {**sub.bounds, **shape.bounds}
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key) or []
        if not variants:
            continue
        subs = [_shape(document, v, depth + 1) for v in variants]
        if all(s.types for s in subs):
            union = set().union(*(s.types for s in subs))
            shape.types = (shape.types & union) if shape.types else union
        for sub in subs:
            for name, prop in sub.properties.items():
                shape.properties.setdefault(name, prop)
            if shape.items is None and sub.items is not None:
                shape.items = sub.items
    return shape


def _accepts(wider: set[str], narrower: set[str]) -> bool:
    """Does a schema of types ``wider`` accept every value of types ``narrower``? (empty = anything)"""
    if not wider:
        return True
    if not narrower:
        return False
    expanded = set(wider)
    if "number" in expanded:
        expanded.add("integer")
    return narrower <= expanded


def _fmt(types: set[str]) -> str:
    return "|".join(sorted(types)) if types else "any"


def _narrowed_bounds(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    notes: list[str] = []

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    for key in ("minimum", "exclusiveMinimum", "minLength", "minItems"):
        if number(new.get(key)) and (key not in old or (number(old[key]) and new[key] > old[key])):
            notes.append(f"{key} {old.get(key, 'unset')} -> {new[key]}")
    for key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems"):
        if number(new.get(key)) and (key not in old or (number(old[key]) and new[key] < old[key])):
            notes.append(f"{key} {old.get(key, 'unset')} -> {new[key]}")
    if new.get("pattern") is not None and new.get("pattern") != old.get("pattern"):
        notes.append(f"pattern {old.get('pattern', 'unset')!r} -> {new['pattern']!r}")
    return notes


def _diff_schema(
    old_doc: dict[str, Any],
    new_doc: dict[str, Any],
    label: str,
    where: str,
    old_schema: Any,
    new_schema: Any,
    direction: str,
    depth: int,
) -> Iterator[Change]:
    if old_schema is None or depth > MAX_DEPTH:
        return
    old = _shape(old_doc, old_schema)
    new = _shape(new_doc, new_schema)
    if direction == "request":
        if not _accepts(new.types, old.types):
            message = f"type narrowed: {_fmt(old.types)} -> {_fmt(new.types)}"
            yield Change("request-type-narrowed", label, where, message)
        if new.enum is not None:
            lost = [v for v in (old.enum or []) if v not in new.enum] if old.enum is not None else None
            if lost is None:
                yield Change("request-type-narrowed", label, where, f"now limited to the values {new.enum!r}")
            elif lost:
                yield Change("request-type-narrowed", label, where, f"no longer accepts the values {lost!r}")
        for note in _narrowed_bounds(old.bounds, new.bounds):
            yield Change("request-type-narrowed", label, where, f"constraint narrowed: {note}")
        for name in old.properties:
            if name not in new.properties:
                yield Change("request-field-removed", label, f"{where}.{name}", f"request field {name!r} was removed")
        for name in sorted(new.required - old.required):
            state = "became required" if name in old.properties else "is new and required"
            yield Change("request-field-required", label, f"{where}.{name}", f"request field {name!r} {state}")
    else:
        if old.types and not _accepts(old.types, new.types):
            yield Change("response-type-changed", label, where, f"type changed: {_fmt(old.types)} -> {_fmt(new.types)}")
        for name in old.properties:
            if name not in new.properties:
                yield Change("response-field-removed", label, f"{where}.{name}", f"response field {name!r} was removed")
        for name in sorted(old.required - new.required):
            if name in new.properties:
                yield Change(
                    "response-field-optional",
                    label,
                    f"{where}.{name}",
                    f"response field {name!r} is no longer always present",
                )
    for name, old_prop in old.properties.items():
        if name in new.properties:
            yield from _diff_schema(
                old_doc, new_doc, label, f"{where}.{name}", old_prop, new.properties[name], direction, depth + 1
            )
    if old.items is not None and new.items is not None:
        yield from _diff_schema(old_doc, new_doc, label, f"{where}[]", old.items, new.items, direction, depth + 1)


# --- baseline files ----------------------------------------------------------------------------------


def load_baseline(path: Path, app: str) -> dict[str, Any] | None:
    """The baseline document of ``app`` in ``path``; None when the file or the app's entry is missing.

    The file is either one OpenAPI document (the baseline of whichever single app is checked) or
    ``{"apps": {"<app>": <document>, ...}}`` for several apps.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"baseline {path} is not readable JSON: {exc}",
            hint="regenerate it with `falemu check --update-baseline`",
        ) from None
    if isinstance(data, dict) and "openapi" in data:
        return data
    if isinstance(data, dict) and isinstance(data.get("apps"), dict):
        entry = data["apps"].get(app)
        return entry if isinstance(entry, dict) else None
    raise UsageError(
        f'baseline {path} is neither an OpenAPI document nor an {{"apps": ...}} mapping',
        hint="regenerate it with `falemu check --update-baseline`",
    )


def write_baseline(path: Path, documents: Mapping[str, dict[str, Any]]) -> None:
    """Record ``documents`` (app -> OpenAPI document) in ``path``.

    One app and no existing multi-app file: the plain document. Otherwise the ``{"apps": ...}`` mapping,
    merged into what the file already holds.
    """
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and isinstance(loaded.get("apps"), dict):
                existing = dict(loaded["apps"])
        except (OSError, ValueError):
            existing = {}
    if len(documents) == 1 and not existing:
        payload: Any = next(iter(documents.values()))
    else:
        payload = {"apps": {**existing, **documents}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
