"""Resolution of Onyxia-style ``values.schema.json`` files.

Two stages, so that the expensive one is cached:

1. :func:`resolve_structure` (context-independent, cached per chart digest and schema-registry
   digest): inline ``$ref`` (local ``#/...`` pointers and names of the schema registry) and
   replace nodes carrying ``x-onyxia.overwriteSchemaWith`` by the registry's fragment.
2. :func:`inject_context` (per launch): apply ``x-onyxia.overwriteDefaultWith``,
   ``overwriteListEnumWith`` and ``useRegionSliderConfig`` over the injection context, exactly
   as Onyxia's web client does (``injectXOnyxiaContextInValuesSchemaJson``).

Form keywords (``hidden``, ``readonly``, ``render``, ``listEnum``, ``slider*``, ``form``,
``title``...) are left in place for the UI; JSON Schema validators ignore unknown keywords.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

from datalab.catalog.merge import coalesce
from datalab.errors import CatalogError, SchemaError

SHIPPED_SCHEMAS_DIR = Path(__file__).resolve().parents[3] / "catalog" / "schemas"

# Keys whose values are data, not sub-schemas: never walked for $ref / x-onyxia.
_DATA_KEYWORDS = frozenset(
    {"default", "enum", "const", "examples", "listEnum", "x-onyxia", "x-form", "hidden"}
)
_DROP_IN_FRAGMENTS = ("$schema", "$id")


def validator_class_for(schema: dict[str, Any]) -> type[Validator]:
    """Draft 2020-12 / 2019-09 / 6 / 4 when ``$schema`` says so, else Draft 7 (Onyxia's)."""
    uri = str(schema.get("$schema", ""))
    if "2020-12" in uri:
        return jsonschema.Draft202012Validator
    if "2019-09" in uri:
        return jsonschema.Draft201909Validator
    if "draft-06" in uri:
        return jsonschema.Draft6Validator
    if "draft-04" in uri:
        return jsonschema.Draft4Validator
    return jsonschema.Draft7Validator


class SchemaRegistry:
    """Named schema fragments (``ide/s3.json``...) for ``overwriteSchemaWith`` and ``$ref``.

    ``dirs`` are searched in order: the first directory holding a name wins, so instance
    admins put their directories before the shipped one (:meth:`with_overrides` does that).
    """

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = [Path(d) for d in dirs]
        fragments: dict[str, dict[str, Any]] = {}
        for directory in reversed(self.dirs):  # later dirs first, so earlier ones overwrite
            if not directory.is_dir():
                raise CatalogError(f"schema directory {directory} does not exist")
            for file in sorted(directory.rglob("*.json")):
                name = file.relative_to(directory).as_posix()
                try:
                    fragment = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CatalogError(f"schema fragment {file} is not valid JSON: {exc}") from exc
                if not isinstance(fragment, dict):
                    raise CatalogError(f"schema fragment {file} must be a JSON object")
                fragments[name] = fragment
        self._fragments = fragments
        self.digest = hashlib.sha256(json.dumps(fragments, sort_keys=True).encode()).hexdigest()

    @classmethod
    def with_overrides(cls, dirs: Sequence[Path] = ()) -> SchemaRegistry:
        """The admin's directories (first wins) in front of the shipped fragments."""
        if not dirs:
            return shipped_schemas()
        return cls([*dirs, SHIPPED_SCHEMAS_DIR])

    def names(self) -> list[str]:
        return sorted(self._fragments)

    def get(self, name: str) -> dict[str, Any] | None:
        """A copy of the named fragment; ``None`` if unknown. Accepts ``./ide/s3.json``."""
        fragment = self._fragments.get(name.removeprefix("./"))
        return copy.deepcopy(fragment) if fragment is not None else None


@cache
def shipped_schemas() -> SchemaRegistry:
    return SchemaRegistry([SHIPPED_SCHEMAS_DIR])


# ---------------------------------------------------------------------------------------------
# Stage 1: structure ($ref, overwriteSchemaWith)


def resolve_structure(schema: dict[str, Any], registry: SchemaRegistry) -> dict[str, Any]:
    """A self-contained copy of ``schema``: references inlined, registry fragments substituted."""
    structure = _Structure(registry).walk(copy.deepcopy(schema), schema, "", ())
    if not isinstance(structure, dict):
        raise SchemaError("values.schema.json must resolve to a JSON object")
    return structure


class _Structure:
    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry

    def walk(self, node: Any, document: dict[str, Any], path: str, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [self.walk(item, document, path, stack) for item in node]
        if not isinstance(node, dict):
            return node
        x_onyxia = node.get("x-onyxia")
        if isinstance(x_onyxia, dict) and isinstance(x_onyxia.get("overwriteSchemaWith"), str):
            name = x_onyxia["overwriteSchemaWith"]
            fragment = self.registry.get(name)
            if fragment is not None:  # unknown names keep the chart's inline schema, as Onyxia
                return self.fragment(fragment, name, path, stack)
        if isinstance(node.get("$ref"), str):
            target, target_document, key = self.dereference(node["$ref"], document, path)
            if key in stack:
                chain = " -> ".join([*stack, key])
                raise SchemaError(f"circular $ref at {path or '(root)'}: {chain}")
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            resolved = self.walk(target, target_document, path, (*stack, key))
            # siblings (description, default...) win over the referenced schema
            node = {**resolved, **siblings} if isinstance(resolved, dict) else resolved
            if not isinstance(node, dict):
                return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                out[key] = value
            elif key == "properties" and isinstance(value, dict):
                out[key] = {
                    name: self.walk(sub, document, _join(path, name), stack)
                    for name, sub in value.items()
                }
            else:
                out[key] = self.walk(value, document, path, stack)
        return out

    def fragment(
        self, fragment: dict[str, Any], name: str, path: str, stack: tuple[str, ...]
    ) -> Any:
        if name in stack:
            raise SchemaError(f"circular overwriteSchemaWith at {path}: {' -> '.join(stack)}")
        for key in _DROP_IN_FRAGMENTS:
            fragment.pop(key, None)
        return self.walk(fragment, fragment, path, (*stack, name))

    def dereference(
        self, ref: str, document: dict[str, Any], path: str
    ) -> tuple[Any, dict[str, Any], str]:
        if ref.startswith("#"):
            return _pointer(document, ref, path), document, f"{id(document)}{ref}"
        if re.match(r"^[a-z][a-z0-9+.-]*://", ref):
            raise SchemaError(
                f"$ref {ref!r} at {path or '(root)'}: remote references are not fetched; put the "
                "fragment in a schema directory and reference it by name (e.g. 'ide/s3.json')"
            )
        name, _, pointer = ref.partition("#")
        fragment = self.registry.get(name)
        if fragment is None:
            raise SchemaError(
                f"$ref {ref!r} at {path or '(root)'}: no schema fragment named {name!r}; "
                f"known fragments: {', '.join(self.registry.names()) or '(none)'}"
            )
        for key in _DROP_IN_FRAGMENTS:
            fragment.pop(key, None)
        target = _pointer(fragment, "#" + pointer, path) if pointer else fragment
        return target, fragment, name + ("#" + pointer if pointer else "")


def _pointer(document: dict[str, Any], ref: str, path: str) -> Any:
    node: Any = document
    for raw in ref.removeprefix("#").split("/")[1:] if ref not in ("#", "#/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError(
                f"$ref {ref!r} at {path or '(root)'}: the document has nothing there (no {part!r})"
            )
    return copy.deepcopy(node)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def iter_properties(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every (path, sub-schema) reachable through ``properties``, depth first."""
    yield path, schema
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict):
                yield from iter_properties(sub, (*path, name))


def readonly_paths(schema: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths users may not change: ``x-onyxia.readonly`` (Onyxia) or ``readOnly`` (JSON Schema)."""
    found = []
    for path, node in iter_properties(schema):
        x_onyxia = node.get("x-onyxia")
        if path and (
            node.get("readOnly") is True
            or (isinstance(x_onyxia, dict) and x_onyxia.get("readonly") is True)
        ):
            found.append(path)
    return found


# ---------------------------------------------------------------------------------------------
# Stage 2: the injection context (overwriteDefaultWith, overwriteListEnumWith, sliders)

_FULL_REFERENCE = re.compile(r"^\{\{([^}]+)\}\}$")
_REFERENCE = re.compile(r"\{\{([^}]+)\}\}")
_TRUE = ("true", "1", "yes", "y")
_FALSE = ("false", "0", "no", "n")
_MISSING = object()
# which region slider settings apply to a slider bound ("down": the request, "up": the limit)
_SLIDER_KEYS: dict[Any, tuple[str, ...]] = {
    "down": ("sliderMin", "sliderUnit", "sliderStep"),
    "up": ("sliderMax",),
    None: ("sliderMin", "sliderMax", "sliderUnit", "sliderStep"),
}


def resolve_reference(expression: Any, context: dict[str, Any], *, root: bool = True) -> Any:
    """Resolve an ``overwriteDefaultWith`` expression over the context (Onyxia's semantics).

    ``"user.idep"`` and ``"{{user.idep}}"`` give the value itself (any type); a string with
    ``{{...}}`` parts gives a string (``None`` if one part is missing or not a scalar); lists and
    mappings are resolved element by element; other values are returned as they are.
    """
    if isinstance(expression, str):
        match = _FULL_REFERENCE.match(expression)
        if match:
            value = _lookup(context, match.group(1).strip())
            return None if value is _MISSING else value
        if "{{" in expression:
            failed = False

            def substitute(part: re.Match[str]) -> str:
                nonlocal failed
                value = _lookup(context, part.group(1).strip())
                if isinstance(value, bool):
                    return "true" if value else "false"
                if isinstance(value, str | int | float):
                    return str(value)
                failed = True
                return ""

            text = _REFERENCE.sub(substitute, expression)
            return None if failed else text
        if root:
            return resolve_reference("{{" + expression + "}}", context, root=True)
        return expression
    if isinstance(expression, list):
        return [resolve_reference(item, context, root=False) for item in expression]
    if isinstance(expression, dict):
        return {k: resolve_reference(v, context, root=False) for k, v in expression.items()}
    return expression


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    # a.b[0]["c.d"]['e'] -> ["a", "b", "0", "c.d", "e"]
    parts: list[str] = []
    for token in re.finditer(r"\[\"([^\"]+)\"\]|\['([^']+)'\]|\[(\d+)\]|([^.\[\]]+)", dotted):
        parts.append(next(g for g in token.groups() if g is not None))
    node: Any = context
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def inject_context(structure: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """A copy of the resolved structure with defaults, list enums and sliders from the context."""
    schema = copy.deepcopy(structure)
    for path, node in iter_properties(schema):
        _inject_node(node, context, ".".join(path) or "(root)")
    return schema


def _main_type(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else None


def _inject_node(node: dict[str, Any], context: dict[str, Any], path: str) -> None:
    x_onyxia = node.get("x-onyxia")
    x_onyxia = x_onyxia if isinstance(x_onyxia, dict) else {}
    kind = _main_type(node)

    expression = x_onyxia.get("overwriteDefaultWith")
    resolved = resolve_reference(expression, context) if expression is not None else None
    if kind == "array" and isinstance(resolved, list):
        resolved = _map_items(node.get("items"), resolved, context)
    if resolved is not None:
        # a copy: the schema must not share lists or mappings with the caller's context
        node["default"] = copy.deepcopy(_coerce(resolved, kind, expression, path))
    elif "default" not in node and "properties" not in node:
        # Onyxia gives every form field a default of its type's empty value
        empty = {"string": "", "array": [], "object": {}}.get(kind or "")
        if empty is not None:
            node["default"] = empty

    list_expression = x_onyxia.get("overwriteListEnumWith")
    if list_expression is not None:
        options = resolve_reference(list_expression, context)
        if isinstance(options, list):
            node["listEnum"] = copy.deepcopy(options)

    slider_id = x_onyxia.get("useRegionSliderConfig")
    if slider_id is not None and node.get("render") == "slider":
        slider = _lookup(context, f"region.sliders.{slider_id}")
        if isinstance(slider, dict):
            keys = _SLIDER_KEYS.get(node.get("sliderExtremity"), _SLIDER_KEYS[None])
            node.update({k: slider[k] for k in keys if k in slider})


def _map_items(items: Any, resolved: list[Any], context: dict[str, Any]) -> list[Any]:
    """Onyxia's per-item mapping: an array of objects whose default comes from the context
    (e.g. a list of S3 profiles) gets each element shaped by the items' schema. Each item
    property takes ``overwriteDefaultWith`` (default: the element's key of its name) over the
    context with the element's keys on top; its own default when that resolves to nothing. Elements
    that are not objects, or that do not fit, leave the list as it is (as Onyxia)."""
    if (
        not isinstance(items, dict)
        or _main_type(items) != "object"
        or not isinstance(items.get("properties"), dict)
        or not all(isinstance(element, dict) for element in resolved)
    ):
        return resolved
    mapped = []
    for element in resolved:
        template = copy.deepcopy(items)
        for name, sub in template["properties"].items():
            x_onyxia = sub.setdefault("x-onyxia", {}) if isinstance(sub, dict) else None
            if isinstance(x_onyxia, dict) and name in element:  # the element's own key only
                x_onyxia.setdefault("overwriteDefaultWith", "{{" + name + "}}")
        try:
            value = schema_defaults(inject_context(template, {**context, **element}))
        except SchemaError:
            return resolved
        mapped.append(value if isinstance(value, dict) else {})
    return mapped


def _coerce(value: Any, kind: str | None, expression: Any, path: str) -> Any:
    where = f"x-onyxia.overwriteDefaultWith {expression!r} at {path}"
    if kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return (
            value
            if isinstance(value, str)
            else (json.dumps(value) if isinstance(value, dict | list) else str(value))
        )
    if kind == "array":
        if not isinstance(value, list):
            raise SchemaError(f"{where} resolved to {type(value).__name__}, not an array")
        return value
    if kind == "object":
        if not isinstance(value, dict):
            raise SchemaError(f"{where} resolved to {type(value).__name__}, not an object")
        return value
    if kind == "boolean":
        if isinstance(value, str):
            if value.lower() not in _TRUE + _FALSE:
                raise SchemaError(
                    f"{where} resolved to {value!r}, which is not a boolean "
                    f"(accepted: {' '.join(_TRUE + _FALSE)})"
                )
            return value.lower() in _TRUE
        if isinstance(value, dict | list):
            raise SchemaError(f"{where} resolved to a {type(value).__name__}, not a boolean")
        return bool(value)
    if kind in ("number", "integer"):
        number: float | int
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SchemaError(f"{where} resolved to {value!r}, not a number")
        try:
            number = value if isinstance(value, int | float) else float(value)
        except ValueError:
            raise SchemaError(f"{where} resolved to {value!r}, not a number") from None
        if kind == "integer":
            if float(number) != int(number):
                raise SchemaError(f"{where} resolved to {number!r}, not an integer")
            return int(number)
        return number
    return value


def schema_defaults(schema: dict[str, Any]) -> Any:
    """The values a form would start from: every ``default``, nested through ``properties``.

    An object's own ``default`` wins over its properties' defaults (it is the more specific
    statement, e.g. ``startupProbe`` injected whole from ``region.startupProbe``).
    """
    properties = schema.get("properties")
    if isinstance(properties, dict):
        children = {}
        for name, sub in properties.items():
            if isinstance(sub, dict):
                value = schema_defaults(sub)
                if value is not _MISSING:
                    children[name] = value
        own = schema.get("default", _MISSING)
        if isinstance(own, dict):
            return coalesce(children, own)
        if own is not _MISSING:
            return copy.deepcopy(own)
        return children if children else _MISSING
    return copy.deepcopy(schema["default"]) if "default" in schema else _MISSING
