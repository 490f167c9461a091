"""Shape validation of local recipes (``local.yaml``); see ``docs/local-recipes.md``.

Only the shape is checked here, at catalog load time. Rendering the templates happens in the
local backend, at launch, with the resolved values.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from datalab.errors import ChartInvalid


@cache
def local_recipe_schema() -> dict[str, Any]:
    text = resources.files("datalab.catalog").joinpath("local_recipe.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(local_recipe_schema())


def validate_local_recipe(recipe: Any, chart_name: str) -> dict[str, Any]:
    """Return the recipe if its shape is valid, else raise :class:`ChartInvalid` naming every
    offending key by its path."""
    errors = sorted(_validator().iter_errors(recipe), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{_path(e.absolute_path) or '(root)'}: {_short(e)}" for e in errors)
        raise ChartInvalid(f"chart {chart_name!r}: invalid local.yaml: {details}")
    return recipe  # validated to be an object


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "not" and path and path[-1] == "readiness":
        return "give only one of 'http', 'tcp' or 'unix'"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key(s)")
    return error.message
