"""The app's OpenAPI document: fetching it, validating it, and fal's own rules on top.

fal reads ``/openapi.json`` from a Direct Server Mode container to build the app's playground and API
page; an app without one deploys, but callers get no playground and no schema. ``fal.App`` apps always
have one (FastAPI serves it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from falemu.contract.results import Finding

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCHEMALESS_MEDIA = frozenset({"text/event-stream"})  # responses that need no body schema

MISSING_OPENAPI = (
    "no /openapi.json: fal builds the app's playground and API schema from it, so a deploy of this app has neither"
)
MISSING_OPENAPI_HINT = (
    "serve an OpenAPI 3.x document at GET /openapi.json (FastAPI does this by default; do not set openapi_url=None)"
)


@dataclass
class FetchResult:
    document: dict[str, Any] | None
    status_code: int | None
    problem: str | None  # why there is no document


def fetch_openapi(client: httpx.Client, base_url: str, *, path: str = "/openapi.json") -> FetchResult:
    """GET the app's OpenAPI document through ``client`` (which carries the auth header)."""
    url = base_url.rstrip("/") + path
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return FetchResult(None, None, f"GET {path} failed: {type(exc).__name__}: {exc}")
    if response.status_code == 404:
        return FetchResult(None, 404, MISSING_OPENAPI)
    if response.status_code != 200:
        return FetchResult(None, response.status_code, f"GET {path} answered {response.status_code}, not 200")
    try:
        document = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        ctype = response.headers.get("content-type", "?")
        return FetchResult(None, 200, f"GET {path} did not return JSON (content-type {ctype})")
    if not isinstance(document, dict):
        return FetchResult(None, 200, f"GET {path} returned a JSON {type(document).__name__}, not an object")
    return FetchResult(document, 200, None)


def openapi_version(document: dict[str, Any]) -> str | None:
    version = document.get("openapi")
    if isinstance(version, str):
        return version
    swagger = document.get("swagger")
    return f"swagger {swagger}" if swagger is not None else None


def validate_document(document: dict[str, Any], *, limit: int = 20) -> list[Finding]:
    """Validate against the OpenAPI 3.0 / 3.1 specification (openapi-spec-validator)."""
    from jsonschema_path import SchemaPath
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    version = openapi_version(document)
    if version is None:
        return [Finding("not an OpenAPI document: it has no 'openapi' version field")]
    if version.startswith("3.0"):
        validator_cls: Any = OpenAPIV30SpecValidator
    elif version.startswith("3.1"):
        validator_cls = OpenAPIV31SpecValidator
    else:
        return [Finding(f"OpenAPI version {version} is not supported: fal needs OpenAPI 3.0 or 3.1")]
    findings: list[Finding] = []
    try:
        errors = validator_cls(SchemaPath.from_dict(document)).iter_errors()
        for error in errors:
            where = "/".join(str(p) for p in getattr(error, "path", ()) or ())
            message = str(getattr(error, "message", error)).splitlines()[0]
            findings.append(Finding(f"{message}" + (f" (at {where})" if where else "")))
            if len(findings) >= limit:
                break
    except Exception as exc:  # the validator raises on unresolvable $refs and the like
        findings.append(Finding(f"document could not be validated: {type(exc).__name__}: {exc}"))
    return findings


def iter_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every operation of the document."""
    paths = document.get("paths")
    if not isinstance(paths, dict):
        return
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield method.upper(), str(path), operation


def resolve(document: dict[str, Any], node: Any, *, depth: int = 0) -> Any:
    """Follow a local ``$ref`` (``#/components/...``); anything else comes back as it is."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and depth < 32:
        ref: str = node["$ref"]
        if not ref.startswith("#/"):
            return node
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return {}
            target = target[part]
        node = target
        depth += 1
    return node


_EMPTY_SCHEMA_KEYS = {"title", "description", "examples", "example", "default"}


def is_empty_schema(document: dict[str, Any], schema: Any) -> bool:
    """True for a missing schema or one that describes nothing (``{}``, only a title)."""
    if schema is None:
        return True
    if schema is True or schema is False:
        return schema is True
    resolved = resolve(document, schema)
    if not isinstance(resolved, dict):
        return True
    return not (set(resolved) - _EMPTY_SCHEMA_KEYS)


def fal_rules(document: dict[str, Any]) -> list[Finding]:
    """fal's expectations beyond a valid document: every operation describes its input and output.

    fal's playground renders a form from the request schema and the result from the response schema; an
    operation without them shows up as an opaque endpoint.
    """
    findings: list[Finding] = []
    operations = list(iter_operations(document))
    if not operations:
        findings.append(Finding("the document has no operations: fal would publish an app without endpoints"))
    for method, path, operation in operations:
        label = f"{method} {path}"
        body = resolve(document, operation.get("requestBody"))
        if isinstance(body, dict):
            content = body.get("content")
            if not isinstance(content, dict) or not content:
                findings.append(Finding("request body has no content types", operation=label))
            else:
                for media, media_obj in content.items():
                    schema = media_obj.get("schema") if isinstance(media_obj, dict) else None
                    if is_empty_schema(document, schema):
                        findings.append(Finding(f"request body ({media}) has no schema", operation=label))
        responses = operation.get("responses")
        if not isinstance(responses, dict) or not responses:
            findings.append(Finding("no responses documented", operation=label))
            continue
        success = {code: resp for code, resp in responses.items() if str(code).startswith("2")}
        if not success:
            findings.append(Finding("no 2xx response documented", operation=label))
        for code, response in success.items():
            resolved = resolve(document, response)
            if str(code) == "204":
                continue
            content = resolved.get("content") if isinstance(resolved, dict) else None
            if not isinstance(content, dict) or not content:
                findings.append(Finding(f"response {code} has no content or schema", operation=label))
                continue
            for media, media_obj in content.items():
                schema = media_obj.get("schema") if isinstance(media_obj, dict) else None
                if media.split(";")[0].strip().lower() in SCHEMALESS_MEDIA:
                    continue  # a stream of events: the events, not the body, have a shape
                if is_empty_schema(document, schema):
                    findings.append(
                        Finding(
                            f"response {code} ({media}) has no schema",
                            detail="declare the return type (a pydantic model) or response_model=",
                            operation=label,
                        )
                    )
    return findings


def count_operations(document: dict[str, Any]) -> int:
    return sum(1 for _ in iter_operations(document))
