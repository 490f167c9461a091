"""Schema resolution: $ref, overwriteSchemaWith with admin overrides, overwriteDefaultWith in
all its forms, listEnum, sliders, and defaults extraction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datalab.catalog import SHIPPED_SCHEMAS_DIR, CatalogError, SchemaError, SchemaRegistry
from datalab.catalog.merge import coalesce as deep_merge  # the one merge (issue 15 item 3)
from datalab.catalog.schema import (
    inject_context,
    resolve_reference,
    resolve_structure,
    schema_defaults,
    shipped_schemas,
    validator_class_for,
)

CONTEXT: dict[str, Any] = {
    "user": {"idep": "alice", "email": "alice@example.org", "darkMode": False},
    "project": {"id": "user-alice"},
    "k8s": {"domain": "lab.example.org", "randomSubdomain": "1234567", "ingress": True},
    "region": {
        "resources": {"cpuLimit": "4000m"},
        "tolerations": [{"key": "gpu"}],
        "nodeSelector": {"disk": "ssd"},
        "sliders": {
            "cpu": {"sliderMin": 100, "sliderMax": 4000, "sliderStep": 100, "sliderUnit": "m"}
        },
        "defaultNetworkPolicy": "yes",
        "ips": ["10.0.0.1", "10.0.0.2"],
        "dotted.key": {"x": 1},
    },
    "s3": {"port": 8333, "isEnabled": True},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("user.idep", "alice"),  # implicit reference
        ("{{user.idep}}", "alice"),  # explicit
        ("{{ user.idep }}", "alice"),  # spaces inside braces
        (
            "{{project.id}}-{{k8s.randomSubdomain}}.{{k8s.domain}}",
            "user-alice-1234567.lab.example.org",
        ),
        ("s3.port", 8333),  # keeps its type
        ("{{s3.port}}", 8333),
        ("port {{s3.port}}", "port 8333"),  # inside a string: text
        ("{{user.darkMode}}!", "false!"),
        ("region.tolerations", [{"key": "gpu"}]),
        (["fixed", "{{user.idep}}", "user.email"], ["fixed", "alice", "user.email"]),  # array
        (
            {"a": "{{user.idep}}", "b": {"c": "{{k8s.domain}}"}},
            {"a": "alice", "b": {"c": "lab.example.org"}},
        ),
        ("region.ips[1]", "10.0.0.2"),
        ('region["dotted.key"].x', 1),
        ("user.nope", None),  # unresolved: no value (the default stays)
        ("{{user.nope}}-x", None),  # one part missing: no value
        ("{{region.tolerations}}-x", None),  # non-scalar inside a string: no value
        (True, True),
    ],
)
def test_resolve_reference_forms(expression: Any, expected: Any) -> None:
    assert resolve_reference(expression, CONTEXT) == expected


def _field(kind: str, expression: Any, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "x-onyxia": {"overwriteDefaultWith": expression}, **extra}


def test_inject_context_coerces_like_onyxia() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "port_text": _field("string", "s3.port"),
            "port": _field("integer", "{{s3.port}}"),
            "ratio": _field("number", "s3.port"),
            "policy": _field("boolean", "region.defaultNetworkPolicy"),  # "yes" -> True
            "tolerations": _field("array", "region.tolerations", default=[]),
            "selector": _field("object", "region.nodeSelector", default={}),
            "json_text": _field("string", "region.nodeSelector"),
            "missing": _field("string", "user.nope", default="kept"),
            "empty_string": {"type": "string"},
            "nested": {
                "type": "object",
                "properties": {"host": _field("string", "{{project.id}}.{{k8s.domain}}")},
            },
        },
    }
    resolved = inject_context(schema, CONTEXT)
    defaults = schema_defaults(resolved)
    assert defaults == {
        "port_text": "8333",
        "port": 8333,
        "ratio": 8333,
        "policy": True,
        "tolerations": [{"key": "gpu"}],
        "selector": {"disk": "ssd"},
        "json_text": '{"disk": "ssd"}',
        "missing": "kept",
        "empty_string": "",
        "nested": {"host": "user-alice.lab.example.org"},
    }
    assert "default" not in schema["properties"]["port"], "the input schema is not modified"


@pytest.mark.parametrize(
    ("kind", "expression", "message"),
    [
        ("boolean", "user.idep", "not a boolean"),
        ("integer", "user.idep", "not a number"),
        ("array", "user.idep", "not an array"),
        ("object", "user.idep", "not an object"),
    ],
)
def test_inject_context_reports_impossible_coercions(
    kind: str, expression: str, message: str
) -> None:
    schema = {"type": "object", "properties": {"field": _field(kind, expression)}}
    with pytest.raises(SchemaError, match=message) as info:
        inject_context(schema, CONTEXT)
    assert "field" in str(info.value)


def test_list_enum_and_region_sliders() -> None:
    schema = {
        "type": "object",
        "properties": {
            "ip": {
                "type": "string", "listEnum": ["a"],
                "x-onyxia": {"overwriteListEnumWith": "region.ips"},
            },
            "cpu_request": {
                "type": "string", "render": "slider", "sliderMin": 1, "sliderMax": 9,
                "sliderExtremity": "down", "x-onyxia": {"useRegionSliderConfig": "cpu"},
            },
            "cpu_limit": {
                "type": "string", "render": "slider", "sliderMin": 1, "sliderMax": 9,
                "sliderExtremity": "up", "x-onyxia": {"useRegionSliderConfig": "cpu"},
            },
        },
    }  # fmt: skip
    resolved = inject_context(schema, CONTEXT)["properties"]
    assert resolved["ip"]["listEnum"] == ["10.0.0.1", "10.0.0.2"]
    assert (resolved["cpu_request"]["sliderMin"], resolved["cpu_request"]["sliderMax"]) == (100, 9)
    assert (resolved["cpu_limit"]["sliderMin"], resolved["cpu_limit"]["sliderMax"]) == (1, 4000)


def test_overwrite_schema_with_replaces_the_node_and_unknown_names_keep_it() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s3": {
                "type": "object", "description": "inline",
                "x-onyxia": {"overwriteSchemaWith": "ide/s3.json"},
            },
            "other": {
                "type": "string", "default": "x",
                "x-onyxia": {"overwriteSchemaWith": "nope.json"},
            },
        },
    }  # fmt: skip
    structure = resolve_structure(schema, shipped_schemas())
    s3 = structure["properties"]["s3"]
    assert "accessKeyId" in s3["properties"]
    assert "$schema" not in s3, "fragments lose their $schema"
    assert structure["properties"]["other"]["default"] == "x"


def test_admin_schema_dirs_take_precedence(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "ide").mkdir(parents=True)
    (second / "ide").mkdir(parents=True)
    (first / "ide" / "resources.json").write_text(json.dumps({"type": "object", "title": "first"}))
    (second / "ide" / "resources.json").write_text(
        json.dumps({"type": "object", "title": "second"})
    )
    (second / "ide" / "git.json").write_text(json.dumps({"type": "object", "title": "second git"}))
    registry = SchemaRegistry.with_overrides([first, second])

    def title(name: str) -> object:
        fragment = registry.get(name)
        assert fragment is not None, f"no fragment {name}"
        return fragment["title"]

    assert title("ide/resources.json") == "first"
    assert title("ide/git.json") == "second git"
    assert title("ide/s3.json") == "S3"  # shipped, not overridden
    assert registry.digest != shipped_schemas().digest
    assert SchemaRegistry.with_overrides([]) is shipped_schemas()


def test_schema_registry_rejects_bad_fragments(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CatalogError, match=r"bad\.json is not valid JSON"):
        SchemaRegistry([tmp_path])
    with pytest.raises(CatalogError, match="does not exist"):
        SchemaRegistry([tmp_path / "missing"])


def test_shipped_fragments_cover_the_common_onyxia_names() -> None:
    names = set(SchemaRegistry([SHIPPED_SCHEMAS_DIR]).names())
    for name in [
        "ide/resources.json", "ide/s3.json", "ide/vault.json", "ide/git.json",
        "ide/password.json", "ide/init.json", "ide/persistence.json", "ide/ingress.json",
        "ide/extraenv.json", "ide/role.json", "ide/customImage.json", "network-policy.json",
        "nodeSelector.json", "tolerations.json", "ide/startupProbe.json",
    ]:  # fmt: skip
        assert name in names


def test_refs_local_and_to_the_registry_with_siblings() -> None:
    schema = {
        "definitions": {
            "port": {"type": "integer", "minimum": 1, "default": 80},
            "pair": {"type": "object", "properties": {"a": {"$ref": "#/definitions/port"}}},
        },
        "type": "object",
        "properties": {
            "web": {"$ref": "#/definitions/port", "default": 8080},
            "pair": {"$ref": "#/definitions/pair"},
            "env": {"$ref": "ide/extraenv.json"},
            "limits": {"$ref": "ide/resources.json#/properties/limits"},
        },
    }
    structure = resolve_structure(schema, shipped_schemas())
    props = structure["properties"]
    assert props["web"] == {"type": "integer", "minimum": 1, "default": 8080}
    assert props["pair"]["properties"]["a"]["default"] == 80
    assert props["env"]["type"] == "array"
    assert "cpu" in props["limits"]["properties"]
    assert "$ref" not in json.dumps(structure)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("#/definitions/nope", "the document has nothing there"),
        ("ide/nope.json", "no schema fragment named 'ide/nope.json'; known fragments: "),
        ("https://example.org/s.json", "remote references are not fetched"),
    ],
)
def test_bad_refs_are_clear(ref: str, message: str) -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": ref}}}
    with pytest.raises(SchemaError, match=message):
        resolve_structure(schema, shipped_schemas())


def test_circular_refs_are_reported() -> None:
    schema = {
        "definitions": {"a": {"$ref": "#/definitions/b"}, "b": {"$ref": "#/definitions/a"}},
        "properties": {"x": {"$ref": "#/definitions/a"}},
    }
    with pytest.raises(SchemaError, match="circular"):
        resolve_structure(schema, shipped_schemas())


def test_validator_follows_dollar_schema() -> None:
    import jsonschema

    assert validator_class_for({}) is jsonschema.Draft7Validator
    assert (
        validator_class_for({"$schema": "http://json-schema.org/schema#"})
        is jsonschema.Draft7Validator
    )
    assert (
        validator_class_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
        is jsonschema.Draft202012Validator
    )


def test_object_default_wins_over_property_defaults_and_deep_merge_is_helm_like() -> None:
    schema = {
        "type": "object",
        "properties": {
            "probe": {
                "type": "object",
                "default": {"period": 5},
                "properties": {
                    "period": {"type": "integer", "default": 10},
                    "delay": {"default": 1},
                },
            }
        },
    }
    assert schema_defaults(schema) == {"probe": {"period": 5, "delay": 1}}
    assert deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None, "d": 3}, "l": [2]}) == {
        "a": {"c": 2, "d": 3},
        "l": [2],
    }


@pytest.mark.parametrize("name", SchemaRegistry([SHIPPED_SCHEMAS_DIR]).names())
def test_every_shipped_fragment_is_a_schema_its_defaults_satisfy(name: str) -> None:
    fragment = SchemaRegistry([SHIPPED_SCHEMAS_DIR]).get(name)
    assert fragment is not None
    validator = validator_class_for(fragment)
    validator.check_schema(fragment)
    defaults = schema_defaults(fragment)  # a sentinel when the fragment has none
    if isinstance(defaults, dict | list | str | int | float | bool):
        assert [e.message for e in validator(fragment).iter_errors(defaults)] == []


def test_array_defaults_are_mapped_item_by_item() -> None:
    """Onyxia's per-item mapping: an array of objects from the context takes the items' shape,
    each property from its overwriteDefaultWith (default {{<name>}}) over the element."""
    schema = {
        "type": "object",
        "properties": {
            "profiles": {
                "type": "array",
                "x-onyxia": {"overwriteDefaultWith": "s3_array"},
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {
                            "type": "string",
                            "x-onyxia": {"overwriteDefaultWith": "{{profileName}}"},
                        },
                        "url": {"type": "string"},
                        "region": {"type": "string", "default": "us-east-1"},
                        "owner": {
                            "type": "string",
                            "x-onyxia": {"overwriteDefaultWith": "user.idep"},
                        },
                    },
                },
            },
            "tags": {"type": "array", "x-onyxia": {"overwriteDefaultWith": "tags"}},
        },
    }
    context = {
        **CONTEXT,
        "s3_array": [
            {"profileName": "a", "url": "http://x", "extra": 1},
            {"profileName": "b", "url": "http://y", "region": "eu"},
        ],
        "tags": ["t1", {"k": "v"}],
    }
    defaults = schema_defaults(inject_context(schema, context))
    assert defaults["profiles"] == [
        {"name": "a", "url": "http://x", "region": "us-east-1", "owner": "alice"},
        {"name": "b", "url": "http://y", "region": "eu", "owner": "alice"},
    ]
    assert defaults["tags"] == ["t1", {"k": "v"}]  # no object items schema: as it is
    mixed = {**context, "s3_array": [{"profileName": "a"}, "not an object"]}
    assert schema_defaults(inject_context(schema, mixed))["profiles"] == mixed["s3_array"]
