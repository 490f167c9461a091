"""The launcher form, generated from a chart's resolved values schema (a pure function).

:func:`build_form` walks the schema the way Onyxia's launcher does: each top-level object is a
section (tab), nested objects are groups inside it, and every leaf becomes a :class:`Field` whose
widget follows the schema (``render``, ``enum`` / ``listEnum``, ``type``, slider keywords).
Fields that are always hidden (``hidden: true`` / ``x-onyxia.hidden``) are left out of the form:
their values come from the chart and the injection context. Conditional hiding
(``hidden: {path, value, isPathRelative}``) is passed to the browser, which hides the field while
the other field has that value. Read-only fields are shown disabled.

The browser sends only the fields the user changed, as overrides, so the platform resolves every
other value afresh (one-time passwords, random subdomains, credentials).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from datalab.catalog.schema import schema_defaults
from datalab.masking import is_secret_field

_NO_DEFAULT = schema_defaults({})  # what schema_defaults gives a schema without one


@dataclass
class Field:
    path: str  # dotted path in the values: resources.limits.cpu (dots in keys escaped)
    name: str  # last part of the path
    # text | textarea | password | number | integer | checkbox | select | slider | list | json
    widget: str
    kind: str  # the JSON schema type of the value: string, integer, number, boolean...
    label: str
    description: str = ""
    value: Any = None  # current value (the default, or a pre-filled override)
    default: Any = None  # the resolved default: what "restore defaults" goes back to
    readonly: bool = False
    options: list[Any] = field(default_factory=list)
    # min, max, step, unit; and, for a request/limit pair, range (sliderRangeId) and
    # extremity (down: the request, up: the limit), which the browser keeps in order
    slider: dict[str, Any] = field(default_factory=dict)
    pattern: str | None = None
    required: bool = False  # named in its object's ``required``
    hide_when: dict[str, Any] | None = None  # {"path": dotted, "value": json} for the browser
    # "secrets": the input suggests the caller's secret paths (schema: x-datalab.suggest)
    suggest: str | None = None
    # widget "objects" (an array of objects): the fields of one item (their path is the
    # item's key; widget "hidden" keeps a value the form does not show), and a new item
    item_fields: list[Field] = field(default_factory=list)
    new_item: dict[str, Any] = field(default_factory=dict)
    # an item field whose choices are another key of its item (Onyxia's per-item
    # overwriteListEnumWith, e.g. "{{models}}"): that key
    options_from: str | None = None

    @property
    def dom_id(self) -> str:
        return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path)

    @property
    def text_value(self) -> str:
        """The value as the input shows it."""
        if self.widget == "password":
            return ""  # never put a secret in the page: empty keeps the platform's value
        if self.widget == "list":
            return "\n".join(str(v) for v in self.value or [])
        if self.widget == "json":
            return json.dumps(self.value, indent=2, ensure_ascii=False)
        if self.value is None:
            return ""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value)

    @property
    def default_json(self) -> str:
        """The default, for the browser's diff and "restore defaults" (never a secret)."""
        return json.dumps(None if self.widget == "password" else self.default)


@dataclass
class Group:
    path: str
    title: str
    description: str = ""
    fields: list[Field] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    hide_when: dict[str, Any] | None = None

    @property
    def dom_id(self) -> str:
        return "g-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.path or "general")

    def is_empty(self) -> bool:
        return not self.fields and all(g.is_empty() for g in self.groups)


#: schema keywords holding values, not schemas: never searched for translations
_VALUE_KEYWORDS = {"default", "enum", "listEnum", "const", "examples"}


def localize_schema(schema: Any, lang: str) -> Any:
    """A copy of ``schema`` whose ``title`` and ``description`` are in ``lang`` where the
    chart translates them: ``"x-datalab": {"title": {"fr": "Ressources"}, "description":
    {"fr": "..."}}`` beside the node's own (English) texts, which stay where no translation
    exists. JSON Schema and Onyxia ignore ``x-datalab``, so such a chart works everywhere."""
    if isinstance(schema, list):
        return [localize_schema(item, lang) for item in schema]
    if not isinstance(schema, dict):
        return schema
    localized = {
        key: value if key in _VALUE_KEYWORDS else localize_schema(value, lang)
        for key, value in schema.items()
    }
    extension = schema.get("x-datalab")
    if isinstance(extension, dict):
        for text in ("title", "description"):
            translations = extension.get(text)
            if isinstance(translations, dict) and isinstance(translations.get(lang), str):
                localized[text] = translations[lang]
    return localized


def humanise(key: str) -> str:
    """A schema key as a heading, for sections and groups without a ``title``:
    ``extraEnvVars`` -> "Extra env vars", ``openshiftSCC`` -> "Openshift SCC",
    ``user_preferences`` -> "User preferences", ``s3`` -> "S3"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", key)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]
    if not words:
        return key
    text = " ".join(w if w.isupper() and len(w) > 1 else w.lower() for w in words)  # acronyms
    return text[0].upper() + text[1:]


def dotted(parts: tuple[str, ...]) -> str:
    """A field's path as the form and auto-launch URLs write it: keys joined by ``.``, a dot
    inside a key escaped as Helm's ``--set`` does (``resources.limits.nvidia\\.com/gpu``)."""
    return ".".join(part.replace(".", "\\.") for part in parts)


def split_dotted(path: str) -> tuple[str, ...]:
    """The keys of a :func:`dotted` path."""
    return tuple(part.replace("\\.", ".") for part in re.split(r"(?<!\\)\.", path))


def _is_always_hidden(node: dict[str, Any]) -> bool:
    x_onyxia = node.get("x-onyxia")
    return node.get("hidden") is True or (
        isinstance(x_onyxia, dict) and x_onyxia.get("hidden") is True
    )


def _is_readonly(node: dict[str, Any]) -> bool:
    x_onyxia = node.get("x-onyxia")
    return node.get("readOnly") is True or (
        isinstance(x_onyxia, dict) and x_onyxia.get("readonly") is True
    )


def _main_type(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind if isinstance(kind, str) else None


def _hide_when(node: dict[str, Any], parent: tuple[str, ...]) -> dict[str, Any] | None:
    """Onyxia's conditional ``hidden: {value, path, isPathRelative}``; paths use ``/``."""
    hidden = node.get("hidden")
    if not isinstance(hidden, dict) or "path" not in hidden:
        return None
    parts = [p for p in str(hidden["path"]).replace(".", "/").split("/") if p]
    absolute = (*parent, *parts) if hidden.get("isPathRelative") else tuple(parts)
    return {"path": dotted(absolute), "value": hidden.get("value")}


def _get(values: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


def _widget(node: dict[str, Any], name: str) -> str:
    kind = _main_type(node)
    render = node.get("render")
    if kind == "boolean":
        return "checkbox"
    if kind in ("array",):
        items = node.get("items")
        items = items if isinstance(items, dict) else {}
        if _main_type(items) in ("string", "number", "integer", None):
            return "list"
        return "objects" if _item_properties(items) else "json"
    if kind == "object":
        return "json"
    if render == "password" or (kind == "string" and is_secret_field(node, name)):
        return "password"
    if _options(node):  # an empty listEnum (nothing to choose from) is a text box
        return "select"
    if render == "slider" and "sliderMax" in node:
        return "slider"
    if render == "textArea" or node.get("x-form", {}).get("textarea") is True:
        return "textarea"
    if kind in ("number", "integer"):
        return kind
    return "text"


_SCALARS = ("string", "number", "integer", "boolean")


def _item_properties(items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The properties of an array's object items when the form can show each item as a group
    (every shown property a scalar), else {} (the array stays a JSON box)."""
    properties = items.get("properties")
    if _main_type(items) != "object" or not isinstance(properties, dict) or not properties:
        return {}
    for sub in properties.values():
        if not isinstance(sub, dict):
            return {}
        if not _is_always_hidden(sub) and _main_type(sub) not in _SCALARS:
            return {}
    return properties


def _item_fields(node: dict[str, Any]) -> list[Field]:
    items = node["items"]
    required = _required(items)
    found = []
    for name, sub in _item_properties(items).items():
        default = schema_defaults(sub)
        item_field = _field((name,), sub, None, None if default is _NO_DEFAULT else default, False)
        item_field.path = name
        item_field.required = name in required
        if _is_always_hidden(sub):
            item_field.widget = "hidden"
        item_field.options_from = _item_options_key(sub, set(items["properties"]) - {name})
        found.append(item_field)
    return found


def _item_options_key(node: dict[str, Any], siblings: set[str]) -> str | None:
    """The item key an item field's ``overwriteListEnumWith`` names (``{{models}}``)."""
    x_onyxia = node.get("x-onyxia")
    expression = x_onyxia.get("overwriteListEnumWith") if isinstance(x_onyxia, dict) else None
    if not isinstance(expression, str):
        return None
    key = expression.strip().removeprefix("{{").removesuffix("}}").strip()
    return key if key in siblings else None


def _options(node: dict[str, Any]) -> list[Any]:
    for key in ("enum", "listEnum"):
        if isinstance(node.get(key), list) and node[key]:
            return list(node[key])
    return []


def _field(
    path: tuple[str, ...],
    node: dict[str, Any],
    current: Any,
    default: Any,
    readonly: bool,
    required: bool = False,
) -> Field:
    name = path[-1]
    widget = _widget(node, name)
    options: list[Any] = []
    if widget == "select":
        options = _options(node)
        if current not in options and current not in (None, ""):
            options.insert(0, current)
    slider: dict[str, Any] = {}
    if widget == "slider":
        slider = {
            "min": node.get("sliderMin", 0),
            "max": node.get("sliderMax"),
            "step": node.get("sliderStep", 1),
            "unit": node.get("sliderUnit", ""),
        }
        if node.get("sliderRangeId") and node.get("sliderExtremity") in ("down", "up"):
            slider |= {"range": str(node["sliderRangeId"]), "extremity": node["sliderExtremity"]}
    item_fields = _item_fields(node) if widget == "objects" else []
    return Field(
        item_fields=item_fields,
        new_item={f.name: f.default for f in item_fields if f.default is not None},
        path=dotted(path),
        name=name,
        widget=widget,
        kind=_main_type(node) or "string",
        label=str(node.get("title") or name),
        description=str(node.get("description") or ""),
        value=current,
        default=default,
        readonly=readonly or _is_readonly(node),
        options=options,
        slider=slider,
        pattern=node.get("pattern") if isinstance(node.get("pattern"), str) else None,
        required=required,
        hide_when=_hide_when(node, path[:-1]),
        suggest=(node.get("x-datalab") or {}).get("suggest") if widget == "text" else None,
    )


def fields(sections: list[Group]) -> list[Field]:
    """Every field of a form, depth first."""
    found: list[Field] = []
    for group in sections:
        found += group.fields
        found += fields(group.groups)
    return found


def build_form(
    schema: dict[str, Any], defaults: dict[str, Any], current: dict[str, Any] | None = None
) -> list[Group]:
    """Sections of the form: one per top-level object, plus "general" for top-level leaves.

    ``defaults`` are the resolved values for the caller (schema defaults with the injected
    context); ``current`` the values to show (defaults with pre-filled overrides, e.g. from an
    auto-launch URL). Returns only non-empty sections.
    """
    current = defaults if current is None else current
    general = Group(path="", title="")
    sections: list[Group] = [general]
    for name, node in (schema.get("properties") or {}).items():
        if not isinstance(node, dict) or _is_always_hidden(node):
            continue
        if _main_type(node) == "object" and isinstance(node.get("properties"), dict):
            sections.append(_group((name,), node, defaults, current, False))
        else:
            general.fields.append(
                _field(
                    (name,),
                    node,
                    _get(current, (name,)),
                    _get(defaults, (name,)),
                    False,
                    name in _required(schema),
                )
            )
    return [s for s in sections if not s.is_empty()]


def _required(node: dict[str, Any]) -> set[str]:
    required = node.get("required")
    return {str(n) for n in required} if isinstance(required, list) else set()


def _group(
    path: tuple[str, ...],
    node: dict[str, Any],
    defaults: dict[str, Any],
    current: dict[str, Any],
    readonly: bool,
) -> Group:
    readonly = readonly or _is_readonly(node)
    group = Group(
        path=dotted(path),
        title=str(node.get("title") or humanise(path[-1])),
        description=str(node.get("description") or ""),
        hide_when=_hide_when(node, path[:-1]),
    )
    for name, sub in (node.get("properties") or {}).items():
        if not isinstance(sub, dict) or _is_always_hidden(sub):
            continue
        sub_path = (*path, name)
        if _main_type(sub) == "object" and isinstance(sub.get("properties"), dict):
            child = _group(sub_path, sub, defaults, current, readonly)
            if not child.is_empty():
                group.groups.append(child)
        else:
            group.fields.append(
                _field(
                    sub_path,
                    sub,
                    _get(current, sub_path),
                    _get(defaults, sub_path),
                    readonly,
                    name in _required(node),
                )
            )
    return group


def parse_prefill(query: list[tuple[str, str]], schema: dict[str, Any]) -> dict[str, Any]:
    """Overrides from an auto-launch URL: ``?resources.limits.cpu=2500m&persistence.enabled=false``.

    Each parameter naming a schema leaf sets it; values are parsed as JSON when they are valid
    JSON of the field's type (``false``, ``3``, ``["a"]``), else taken as text. Parameters that do
    not name a field (``version``, ``name``, ``autolaunch``...) are ignored here.
    """
    overrides: dict[str, Any] = {}
    for key, raw in query:
        path = split_dotted(key)
        node = _node_at(schema, path)
        if node is None or isinstance(node.get("properties"), dict):
            continue
        value: Any = raw
        if _main_type(node) != "string":
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return overrides


def _node_at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = schema
    for part in path:
        properties = node.get("properties") if isinstance(node, dict) else None
        if not isinstance(properties, dict) or not isinstance(properties.get(part), dict):
            return None
        node = properties[part]
    return node if isinstance(node, dict) else None
