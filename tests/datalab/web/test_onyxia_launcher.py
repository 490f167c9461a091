"""The launcher form of every chart of the real Onyxia catalog (helm-charts-interactive-services;
skipped without a clone): its sections render, every hide condition the page's script reads is
JSON, and the form as the browser reads it back resolves to the same values."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.datalab.catalog.conftest import alice_context, onyxia_charts_at, onyxia_registry
from tests.datalab.conftest import ADMIN_PASSWORD, Env

from datalab.catalog import CatalogRegistry
from datalab.config import Settings
from datalab.values import resolve_values
from datalab.web.context import templates
from datalab.web.forms import Group, build_form, split_dotted
from datalab.web.i18n import translate

SECTION = templates.from_string(
    '{% from "_field.html" import group_block with context %}{{ group_block(section, 0) }}'
)


def _t(key: str, /, **params: Any) -> str:
    return translate("en", key, **params)


class _FormReader(HTMLParser):
    """Reads the rendered fields as launcher.js does (readField): what the browser would send."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict[str, Any]] = []
        self.hide_values: list[str] = []
        self._select: dict[str, Any] | None = None
        self._textarea: dict[str, Any] | None = None
        self._template = 0  # inside a <template> (a new item): not in the form
        self._item_select: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "template":
            self._template += 1
        if self._template:
            return
        if "data-hide-value" in a:
            self.hide_values.append(a["data-hide-value"] or "")
        if "data-field" in a:
            self.fields.append({"path": a["data-path"], "widget": a["data-widget"], **a})
            return
        if not self.fields or tag not in ("input", "select", "textarea", "option", "fieldset"):
            return
        field = self.fields[-1]
        if field["widget"] == "objects":
            self._item_tag(field, tag, a)
            return
        if tag == "input" and a.get("type") != "range" and "control" not in field:
            field["control"] = a
            field["value"] = "checked" in a if a.get("type") == "checkbox" else a.get("value", "")
        elif tag == "select":
            field["control"], field["value"] = a, None
            self._select = field
        elif tag == "option" and self._select is not None:
            if "selected" in a or self._select["value"] is None:
                self._select["value"] = a.get("value")
        elif tag == "textarea":
            field["control"], field["value"] = a, ""
            self._textarea = field

    def _item_tag(self, field: dict[str, Any], tag: str, a: dict[str, Any]) -> None:
        """An array of objects, as launcher.js's readItems reads it."""
        field.setdefault("value", [])
        if tag == "input" and "objects-control" in (a.get("class") or ""):
            field["control"] = a
        elif tag == "fieldset" and a.get("class") == "item":
            field["value"].append({})
        elif tag == "input" and "data-key" in a:
            kind, raw = a["data-kind"], a.get("value", "")
            if kind == "json":
                value: Any = json.loads(raw or "null")
            elif a.get("type") == "checkbox":
                value = "checked" in a
            elif kind in ("number", "integer"):
                value = None if raw.strip() == "" else json.loads(raw)
            else:
                value = raw
            field["value"][-1][a["data-key"]] = value
        elif tag == "select" and "data-key" in a:
            self._item_select = {"key": a["data-key"], "item": field["value"][-1]}
        elif tag == "option" and self._item_select is not None:
            item, key = self._item_select["item"], self._item_select["key"]
            if "selected" in a or key not in item:
                item[key] = a.get("value")

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea["value"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template -= 1
        if tag == "select":
            self._select = self._item_select = None
        elif tag == "textarea":
            self._textarea = None


def _read(field: dict[str, Any]) -> Any:
    raw, widget = field["value"], field["widget"]
    if widget in ("checkbox", "objects"):
        return raw
    numeric = widget in ("number", "integer") or (
        widget == "slider" and field["data-type"] in ("number", "integer")
    )
    if numeric:
        return None if raw.strip() == "" else json.loads(raw)
    if widget == "list":
        return [line.strip() for line in raw.split("\n") if line.strip()]
    if widget == "json":
        return json.loads(raw.removeprefix("\n") or "null")
    return raw


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = split_dotted(path)  # as launcher.js's setPath
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> CatalogRegistry:
    charts = onyxia_charts_at(tmp_path_factory.mktemp("onyxia"))
    return onyxia_registry(charts, tmp_path_factory.mktemp("onyxia-registry"))


def test_every_launcher_form_renders_and_round_trips(registry: CatalogRegistry) -> None:
    context = alice_context()
    [catalog] = registry.catalogs()
    assert len(catalog.chart_names()) >= 20
    for name in catalog.chart_names():
        chart = registry.get_chart("ide", name)
        resolved = resolve_values(chart, context)
        sections: list[Group] = build_form(resolved.schema, resolved.values)
        reader = _FormReader()
        for section in sections:
            reader.feed(SECTION.render(section=section, t=_t))
        for hide_value in reader.hide_values:  # what launcher.js JSON.parses
            json.loads(hide_value)
        assert reader.fields, name
        sent: dict[str, Any] = {}
        for field in reader.fields:
            control = field.get("control", {})
            if field["widget"] == "password" or "readonly" in control or "disabled" in control:
                continue  # the browser sends neither (a password only when typed in)
            _set(sent, field["path"], _read(field))
        again = resolve_values(chart, context, overrides=sent)
        assert again.values == resolved.values, name


def test_string_hide_conditions_reach_the_script_as_json(tmp_path: Path) -> None:
    """A group hidden while another field has a string value: the attribute was double-quoted
    JSON, which ended at the value's first quote."""
    schema = {
        "type": "object",
        "properties": {
            "storage": {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["s3", "none"], "default": "s3"},
                    "s3": {
                        "type": "object",
                        "hidden": {"value": "none", "path": "storage/kind"},
                        "properties": {"bucket": {"type": "string", "default": "b"}},
                    },
                },
            }
        },
    }
    sections = build_form(schema, {"storage": {"kind": "s3", "s3": {"bucket": "b"}}})
    reader = _FormReader()
    reader.feed(SECTION.render(section=sections[0], t=_t))
    assert [json.loads(v) for v in reader.hide_values] == ["none"]


def test_arrays_of_objects_are_repeatable_groups() -> None:
    """Each item of an array of objects is a group of inputs (hidden item properties kept),
    which the browser reads back as the same list; the template of a new item is not read."""
    schema = {
        "type": "object",
        "properties": {
            "env": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Z_]+$", "default": "VAR"},
                        "value": {"type": "string", "default": ""},
                        "port": {"type": "integer", "default": 80},
                        "secret": {"type": "boolean", "default": False},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "models": {"type": "array", "x-onyxia": {"hidden": True}},
                    },
                },
            },
            "matrix": {"type": "array", "items": {"type": "object", "properties": {"m": {}}}},
        },
    }
    values = {
        "env": [
            {"name": "A", "value": "x'\"<y>", "port": 8080, "secret": True, "mode": "b",
             "models": ["m1", "m2"]},
            {"name": "B", "value": "", "port": 1, "secret": False, "mode": "a", "models": []},
        ],
        "matrix": [{"m": [1]}],
    }  # fmt: skip
    [section] = build_form(schema, values)
    env = next(f for f in section.fields if f.path == "env")
    assert env.widget == "objects"
    assert [(f.name, f.widget, f.required) for f in env.item_fields] == [
        ("name", "text", True),
        ("value", "text", False),
        ("port", "integer", False),
        ("secret", "checkbox", False),
        ("mode", "select", False),
        ("models", "hidden", False),
    ]
    assert env.new_item == {"name": "VAR", "value": "", "port": 80, "secret": False, "mode": "a"}
    assert next(f for f in section.fields if f.path == "matrix").widget == "json"
    reader = _FormReader()
    reader.feed(SECTION.render(section=section, t=_t))
    read = {field["path"]: _read(field) for field in reader.fields}
    assert read["env"] == values["env"]
    assert read["matrix"] == values["matrix"]


@pytest.fixture
def settings(settings: Settings, registry: CatalogRegistry) -> Settings:
    """The platform (memory backend) with the real Onyxia catalog, as the registry loads it."""
    return settings.model_copy(update={"catalogs": [registry.configs[0]]})


@pytest.mark.anyio
async def test_every_launcher_page_of_the_catalog_renders(
    env: Env, registry: CatalogRegistry
) -> None:
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    login = await http.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf
    signed_in = await http.post(
        "/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": csrf[1]},
    )
    assert signed_in.status_code == 303
    listing = (await http.get("/catalog")).text
    [catalog] = registry.catalogs()
    assert "library-chart" not in listing
    for name in catalog.chart_names():
        assert f"/launcher/ide/{name}" in listing, name
        page = await http.get(f"/launcher/ide/{name}")
        assert page.status_code == 200, (name, page.text[:500])
        assert f"Launch {name}" in page.text
        for hide_value in re.findall(r"data-hide-value='([^']*)'", page.text):
            json.loads(html.unescape(hide_value))
    library = await http.get("/launcher/ide/library-chart")
    assert library.status_code == 404 and "library chart" in library.text


def test_an_item_chooses_among_its_own_list() -> None:
    """Onyxia's per-item overwriteListEnumWith (jupyter's ai.providers[].selectedModel from the
    provider's models): a select of that item's list, a text box when it has none."""
    schema = {
        "type": "object",
        "properties": {
            "providers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "default": ""},
                        "selectedModel": {
                            "type": "string",
                            "listEnum": [],
                            "default": "",
                            "x-onyxia": {"overwriteListEnumWith": "{{models}}"},
                        },
                        "models": {"type": "array", "x-onyxia": {"hidden": True}},
                    },
                },
            }
        },
    }
    values = {
        "providers": [
            {"name": "p1", "selectedModel": "m2", "models": ["m1", "m2"]},
            {"name": "p2", "selectedModel": "free text", "models": []},
        ]
    }
    [section] = build_form(schema, values)
    page = SECTION.render(section=section, t=_t)
    first, second = page.split('<fieldset class="item">')[1:3]
    assert '<option value="m1"' in first and "selected>m2</option>" in first
    assert "<select" not in second and 'value="free text"' in second
    reader = _FormReader()
    reader.feed(page)
    assert _read(reader.fields[0]) == values["providers"]
