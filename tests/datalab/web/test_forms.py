"""The launcher form built from a resolved schema (a pure function)."""

from __future__ import annotations

from typing import Any

from datalab.web.forms import Field, Group, build_form, parse_prefill

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "default": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
        "env": {"type": "array", "items": {"type": "object"}, "default": []},
        "hiddenTop": {"type": "string", "x-onyxia": {"hidden": True}},
        "service": {
            "type": "object",
            "description": "The service",
            "properties": {
                "image": {"type": "string", "listEnum": ["a", "b"], "render": "list"},
                "mode": {"type": "string", "enum": ["x", "y"]},
                "script": {"type": "string", "render": "textArea"},
                "cpu": {
                    "type": "string",
                    "render": "slider",
                    "sliderMin": 50,
                    "sliderMax": 4000,
                    "sliderStep": 50,
                    "sliderUnit": "m",
                    "pattern": "^[0-9]+m?$",
                },
                "password": {"type": "string", "render": "password"},
                "apiToken": {"type": "string"},
                "fixed": {"type": "string", "x-onyxia": {"readonly": True}},
                "gone": {"type": "string", "hidden": True},
                "git": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "name": {
                            "type": "string",
                            "hidden": {"value": False, "path": "enabled", "isPathRelative": True},
                        },
                    },
                },
            },
        },
        "internal": {"type": "object", "x-onyxia": {"hidden": True}, "properties": {}},
    },
}
VALUES: dict[str, Any] = {
    "replicas": 1,
    "tags": ["x"],
    "env": [{"name": "A"}],
    "service": {
        "image": "a",
        "mode": "x",
        "script": "",
        "cpu": "2",
        "password": "s3cret-value",
        "apiToken": "t0ken",
        "fixed": "platform",
        "git": {"enabled": True, "name": "ada"},
    },
}


def fields(groups: list[Group]) -> dict[str, Field]:
    found: dict[str, Field] = {}
    for group in groups:
        found |= {f.path: f for f in group.fields}
        found |= fields(group.groups)
    return found


def test_widgets_follow_the_schema() -> None:
    sections = build_form(SCHEMA, VALUES)
    assert [s.title for s in sections] == ["", "Service"]  # no title: the key, humanised
    by_path = fields(sections)
    widgets = {path: f.widget for path, f in by_path.items()}
    assert widgets == {
        "replicas": "integer",
        "tags": "list",
        "env": "json",
        "service.image": "select",
        "service.mode": "select",
        "service.script": "textarea",
        "service.cpu": "slider",
        "service.password": "password",
        "service.apiToken": "password",
        "service.fixed": "text",
        "service.git.enabled": "checkbox",
        "service.git.name": "text",
    }
    assert by_path["service.cpu"].slider == {"min": 50, "max": 4000, "step": 50, "unit": "m"}
    assert (by_path["service.cpu"].kind, by_path["replicas"].kind) == ("string", "integer")
    assert by_path["service.image"].options == ["a", "b"]
    assert by_path["service.fixed"].readonly
    assert by_path["service.git.name"].hide_when == {"path": "service.git.enabled", "value": False}
    assert by_path["tags"].text_value == "x"


def test_secrets_never_reach_the_page() -> None:
    by_path = fields(build_form(SCHEMA, VALUES))
    for path in ("service.password", "service.apiToken"):
        assert by_path[path].text_value == ""
        assert by_path[path].default_json == "null"


def test_current_values_are_shown_and_defaults_kept() -> None:
    current = {**VALUES, "replicas": 3}
    replicas = fields(build_form(SCHEMA, VALUES, current))["replicas"]
    assert (replicas.value, replicas.default) == (3, 1)


def test_prefill_parses_by_type_and_ignores_unknown_parameters() -> None:
    overrides = parse_prefill(
        [
            ("replicas", "3"),
            ("tags", '["a","b"]'),
            ("service.cpu", "1500m"),
            ("service.mode", "true"),
            ("service.git.enabled", "false"),
            ("service", "{}"),
            ("nope.x", "1"),
            ("replicas", "not-json"),
        ],
        SCHEMA,
    )
    assert overrides == {
        "replicas": "not-json",  # left as text: the validation names the problem
        "tags": ["a", "b"],
        "service": {"cpu": "1500m", "mode": "true", "git": {"enabled": False}},
    }


def test_required_pattern_empty_list_enum_linked_sliders_and_dotted_keys() -> None:
    slider = {"type": "string", "render": "slider", "sliderMax": 8000, "sliderRangeId": "cpu"}
    schema = {
        "type": "object",
        "properties": {
            "app": {
                "type": "object",
                "required": ["url"],
                "properties": {
                    "url": {"type": "string", "pattern": "^https://"},
                    "model": {"type": "string", "listEnum": [], "render": "list"},
                    "request": {**slider, "sliderExtremity": "down"},
                    "limit": {**slider, "sliderExtremity": "up"},
                    "plain": {**slider, "sliderRangeId": None},
                    "nvidia.com/gpu": {"type": "string"},
                },
            }
        },
    }
    values = {"app": {"url": "https://x", "model": "", "request": "1", "limit": "2"}}
    by_path = fields(build_form(schema, values))
    assert by_path["app.url"].required and by_path["app.url"].pattern == "^https://"
    assert not by_path["app.model"].required
    assert by_path["app.model"].widget == "text"  # nothing to choose from: type it
    assert by_path["app.request"].slider["range"] == by_path["app.limit"].slider["range"] == "cpu"
    assert (
        by_path["app.request"].slider["extremity"],
        by_path["app.limit"].slider["extremity"],
    ) == (
        "down",
        "up",
    )
    assert "range" not in by_path["app.plain"].slider
    assert "app.nvidia\\.com/gpu" in by_path  # a dot in a key is escaped, as in --set
    assert parse_prefill([("app.nvidia\\.com/gpu", "2")], schema) == {
        "app": {"nvidia.com/gpu": "2"}
    }
