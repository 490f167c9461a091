"""Values resolution: ONE pure function from (chart, context, saved config, overrides) to the
validated values a service runs with, shared by the API, the CLI, the UI and both backends.

Order, lowest to highest precedence::

    chart values.yaml  <-  schema defaults  <-  injected context  <-  saved config  <-  overrides

(the schema defaults and the injected context are one layer in practice: injection rewrites the
schema's ``default`` keywords). The result is validated against the resolved schema.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import yaml
from jsonschema.protocols import Validator

from datalab.catalog.chart import Chart
from datalab.catalog.merge import coalesce, merge_layers
from datalab.catalog.schema import (
    SchemaRegistry,
    inject_context,
    iter_properties,
    readonly_paths,
    resolve_structure,
    schema_defaults,
    shipped_schemas,
    validator_class_for,
)
from datalab.catalog.sources import HelmSource
from datalab.commands import project_args
from datalab.errors import ValueProblem, ValuesError

MASK = "********"
_SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|private.?key", re.IGNORECASE)


@dataclass(frozen=True)
class ResolvedValues:
    """Validated values plus the resolved schema (for forms). ``to_json()`` gives plain JSON."""

    values: dict[str, Any]
    schema: dict[str, Any]  # context injected: defaults, listEnum, sliders; {} if none
    catalog_id: str = ""
    chart: str = ""
    version: str = ""
    hidden: list[str] = field(default_factory=list)  # dotted paths the form hides
    readonly: list[str] = field(default_factory=list)  # dotted paths users cannot change

    def to_json(self) -> dict[str, Any]:
        return {
            "catalog_id": self.catalog_id,
            "chart": self.chart,
            "version": self.version,
            "values": self.values,
            "schema": self.schema,
            "hidden": self.hidden,
            "readonly": self.readonly,
        }


@dataclass(frozen=True)
class _PreparedSchema:
    """The context-independent part of a chart's schema, computed once per chart digest."""

    structure: dict[str, Any]
    validator: Validator
    readonly: tuple[tuple[str, ...], ...]
    hidden: tuple[str, ...]
    secret_paths: frozenset[tuple[str, ...]]
    string_paths: frozenset[tuple[str, ...]]
    top_level: tuple[str, ...]


_CACHE: OrderedDict[tuple[str, str], _PreparedSchema] = OrderedDict()
_CACHE_SIZE = 256
_CACHE_LOCK = threading.Lock()


def _prepare(chart: Chart, registry: SchemaRegistry) -> _PreparedSchema:
    key = (chart.digest, registry.digest)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    structure = resolve_structure(chart.schema, registry) if chart.schema else {}
    validator_class = validator_class_for(chart.schema or {})
    nodes = list(iter_properties(structure))
    prepared = _PreparedSchema(
        structure=structure,
        validator=validator_class(structure),
        readonly=tuple(readonly_paths(structure)),
        hidden=tuple(".".join(p) for p, node in nodes if p and _is_hidden(node)),
        secret_paths=frozenset(p for p, node in nodes if p and node.get("render") == "password"),
        string_paths=frozenset(p for p, node in nodes if p and node.get("type") == "string"),
        top_level=tuple(structure.get("properties", {})),
    )
    with _CACHE_LOCK:
        _CACHE[key] = prepared
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return prepared


def _is_hidden(node: dict[str, Any]) -> bool:
    x_onyxia = node.get("x-onyxia")
    return node.get("hidden") is True or (
        isinstance(x_onyxia, dict) and x_onyxia.get("hidden") is True
    )


def resolve_values(
    chart: Chart,
    context: Mapping[str, Any],
    saved_config: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    schemas: SchemaRegistry | None = None,
) -> ResolvedValues:
    """Resolve and validate a chart's values for one user, project and region.

    ``saved_config``: values saved from an earlier launch (unknown top-level keys and readonly
    fields are ignored: they always come fresh from the chart and context). ``overrides``: the
    user's ``--set`` / values file / JSON. Numbers and booleans given for string fields are
    turned into strings (``--set resources.limits.cpu=2``). Raises :class:`ValuesError` listing
    every problem (JSON path, constraint, offending value; secrets masked).
    """
    registry = schemas or chart.schemas or shipped_schemas()
    prepared = _prepare(chart, registry)
    resolved_schema = inject_context(prepared.structure, dict(context)) if chart.schema else {}
    defaults = schema_defaults(resolved_schema) if resolved_schema else {}
    values = coalesce(copy.deepcopy(chart.values), defaults if isinstance(defaults, dict) else {})

    known = set(prepared.top_level) | set(chart.values)
    problems: list[ValueProblem] = []
    saved = _coerce_strings(dict(saved_config or {}), prepared.string_paths)
    if known and prepared.top_level:
        saved = {k: v for k, v in saved.items() if k in known}
    for path in prepared.readonly:
        _delete(saved, path)

    user = _coerce_strings(dict(overrides or {}), prepared.string_paths)
    if prepared.top_level:
        unknown = sorted(k for k in user if k not in known)
        for key in unknown:
            problems.append(
                ValueProblem(
                    path=key,
                    constraint="unknown key",
                    message=f"unknown key {key!r}; known keys: {', '.join(sorted(known))}",
                )
            )
    merged = coalesce(coalesce(values, saved), user)
    for path in prepared.readonly:
        # compared after merging, so that replacing or deleting a parent is caught too
        if _get(merged, path) != _get(values, path):
            given = _get(user, path)
            dotted = ".".join(path)
            problems.append(
                ValueProblem(
                    path=dotted,
                    constraint="readonly",
                    message=f"{dotted} is read-only: it is set by the platform, remove it from "
                    "your values",
                    value=_mask(path, None if given is _ABSENT else given, prepared),
                )
            )
    if problems:
        raise ValuesError(problems, chart=chart.name)

    values = merged
    problems = [_problem(error, prepared) for error in prepared.validator.iter_errors(values)]
    if problems:
        problems.sort(key=lambda p: p.path)
        raise ValuesError(problems, chart=chart.name)
    return ResolvedValues(
        values=values,
        schema=resolved_schema,
        catalog_id=chart.catalog_id,
        chart=chart.name,
        version=chart.version,
        hidden=list(prepared.hidden),
        readonly=[".".join(p) for p in prepared.readonly],
    )


# ---------------------------------------------------------------------------------------------
# helpers on nested dicts

_ABSENT = object()


def _get(data: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return _ABSENT
        data = data[part]
    return data


def _delete(data: dict[str, Any], path: Sequence[str]) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _coerce_strings(
    data: dict[str, Any], string_paths: frozenset[tuple[str, ...]], prefix: tuple[str, ...] = ()
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            out[key] = _coerce_strings(value, string_paths, path)
        elif path in string_paths and isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif path in string_paths and isinstance(value, int | float):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def _json_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _is_secret(path: Sequence[Any], prepared: _PreparedSchema) -> bool:
    names = tuple(p for p in path if isinstance(p, str))
    return names in prepared.secret_paths or any(_SECRET_NAME.search(p) for p in names)


def _mask(path: Sequence[Any], value: Any, prepared: _PreparedSchema) -> Any:
    return MASK if _is_secret(path, prepared) else value


def _problem(error: jsonschema.ValidationError, prepared: _PreparedSchema) -> ValueProblem:
    path = list(error.absolute_path)
    dotted = _json_path(path)
    secret = _is_secret(path, prepared)
    shown = MASK if secret else error.instance
    show = MASK if secret else json.dumps(error.instance, default=str)
    validator, expected = error.validator, error.validator_value
    if validator == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        message = f"expected {' or '.join(kinds)}, got {_type_name(error.instance)} {show}"
    elif validator == "enum":
        message = f"{show} is not one of {json.dumps(expected)}"
    elif validator == "const":
        message = f"must be {json.dumps(expected)}, got {show}"
    elif validator == "required":
        missing = [
            k for k in expected if isinstance(error.instance, dict) and k not in error.instance
        ]
        message = f"missing required key(s): {', '.join(missing)}"
        shown = None
    elif validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = sorted(k for k in error.instance if k not in allowed)
        message = (
            f"unknown key(s) {', '.join(repr(k) for k in extra)}; allowed: "
            f"{', '.join(sorted(allowed)) or '(none)'}"
        )
        shown = extra
    elif validator == "pattern":
        message = f"{show} does not match the pattern {expected!r}"
    elif validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        message = f"{show} violates {validator} {expected}"
    elif validator in ("minLength", "maxLength", "minItems", "maxItems"):
        message = f"{validator} is {expected} ({show} does not satisfy it)"
    else:
        message = error.message if not secret else f"does not satisfy {validator!r}"
    return ValueProblem(path=dotted, constraint=str(validator), message=message, value=shown)


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# inputs: --set, values files


def parse_set_args(args: Iterable[str]) -> dict[str, Any]:
    """Helm ``--set`` expressions (``a.b=c``, ``list={x,y}``, ``a[0].b=1``), merged in order."""
    import helm_python  # Helm's Go runtime (~60 MB): loaded only when --set is used

    merged: dict[str, Any] = {}
    for arg in args:
        key = arg.partition("=")[0].strip()
        if "=" not in arg or not key or key.startswith("."):
            raise _set_error(arg, "expected KEY=VALUE, e.g. resources.limits.cpu=2000m")
        try:
            parsed = helm_python.parse_set_string(arg)
        except helm_python.HelmError as exc:
            raise _set_error(arg, str(exc)) from exc
        if not parsed:  # Helm silently ignores some malformed keys
            raise _set_error(arg, "expected KEY=VALUE, e.g. resources.limits.cpu=2000m")
        merged = merge_layers(merged, parsed)
    return merged


def _set_error(arg: str, problem: str) -> ValuesError:
    return ValuesError(
        [ValueProblem(path="", constraint="--set syntax", message=f"--set {arg!r}: {problem}")]
    )


class _AliasRefused(yaml.YAMLError):
    def __init__(self, alias: str, mark: yaml.Mark) -> None:
        super().__init__(f"alias *{alias}")
        self.alias = alias
        self.mark = mark


class _ValuesLoader(yaml.SafeLoader):
    """The safe loader without aliases: a few hundred bytes of nested aliases (a "billion
    laughs" document) expand to gigabytes once the values are copied, validated or answered."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(event.anchor, event.start_mark)
        return super().compose_node(parent, index)


def load_values_file(text: str, *, source: str = "values file") -> dict[str, Any]:
    """Parse a YAML (or JSON) values file given by a user; errors give the line and column.

    The one loader for users' YAML: aliases (``*name``) are refused, and so is nesting deeper
    than the parser's recursion allows."""

    def refused(message: str) -> ValuesError:
        return ValuesError([ValueProblem(path="", constraint="yaml", message=message)])

    try:
        data = yaml.load(text, Loader=_ValuesLoader)  # noqa: S506 (a SafeLoader)
    except _AliasRefused as exc:
        at = exc.mark
        raise refused(
            f"{source} uses the YAML alias *{exc.alias} at line {at.line + 1}, column "
            f"{at.column + 1}: aliases are not accepted (a few of them can expand a small "
            "document to gigabytes); write the values out in full"
        ) from None
    except RecursionError:
        raise refused(f"{source} is nested too deeply; values are a few levels deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise refused(f"{source} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(
            [
                ValueProblem(
                    path="",
                    constraint="yaml",
                    message=f"{source} must be a mapping of keys to values, got {_type_name(data)}",
                )
            ]
        )
    return data


# ---------------------------------------------------------------------------------------------
# the command bar


def equivalent_commands(
    catalog_id: str,
    chart_name: str,
    version: str,
    release_name: str,
    overrides: Mapping[str, Any] | None,
    values: Mapping[str, Any],
    *,
    helm_source: HelmSource | None = None,
    namespace: str | None = None,
    project: str | None = None,
    shared: bool = False,
    friendly_name: str | None = None,
) -> dict[str, str]:
    """What the user would type to do the same launch by hand (Onyxia's "command bar").

    Returns ``{"datalab": ..., "helm": ..., "values_yaml": ...}``. ``helm_source``: how
    ``helm`` names the chart (:meth:`datalab.catalog.Catalog.helm_source`); without it, a
    repository with a placeholder URL. ``project``,
    ``shared`` and ``friendly_name`` are the launch's own options, so that the ``datalab`` line
    launches the same service in the same project (``namespace`` is the helm line's).
    """
    datalab = ["datalab", "launch", f"{catalog_id}/{chart_name}", "--version", version]
    datalab += ["--name", release_name]
    if friendly_name:
        datalab += ["--friendly-name", friendly_name]
    if shared:
        datalab.append("--shared")
    for key, value in _flatten(dict(overrides or {})):
        datalab += ["--set", f"{key}={value}"]
    if project:
        datalab += project_args(project)

    source = helm_source or HelmSource(
        f"{catalog_id}/{chart_name}", f"helm repo add {shlex.quote(catalog_id)} <REPO_URL>"
    )
    helm = [
        "helm", "upgrade", "--install", release_name, source.ref, "--version", version,
    ]  # fmt: skip
    if namespace:
        helm += ["--namespace", namespace]
    helm += ["-f", "values.yaml"]
    return {
        "datalab": shlex.join(datalab),
        "helm": (source.setup + " && " if source.setup else "") + shlex.join(helm),
        "values_yaml": yaml.safe_dump(dict(values), sort_keys=False, allow_unicode=True),
    }


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``--set`` pairs for nested values: dots in keys and commas in values escaped as Helm
    expects, lists of scalars as ``{a,b}``."""
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        name = prefix + key.replace(".", "\\.")
        if isinstance(value, dict) and value:
            pairs += _flatten(value, name + ".")
        elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
            pairs.append((name, "{" + ",".join(_scalar(v) for v in value) + "}"))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    pairs += _flatten(item, f"{name}[{index}].")
                else:
                    pairs.append((f"{name}[{index}]", _scalar(item)))
        else:
            pairs.append((name, _scalar(value)))
    return pairs


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{}"
    return str(value).replace("\\", "\\\\").replace(",", "\\,")
