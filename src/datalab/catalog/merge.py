"""Merging values as Helm does, in one place. Two rules, as in Helm:

- :func:`merge_layers`: the values a user gives, in order (values files, JSON, ``--set``):
  ``helm -f a.yaml -f b.yaml --set x=1``. Mappings merge recursively and anything else
  replaces; a ``null`` replaces too and is kept, to delete that key from the chart's values.
- :func:`coalesce`: those layers onto the chart's values (Helm's ``CoalesceValues``): mappings
  merge recursively, anything else replaces, and ``null`` deletes the key.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """User value layers merged in order, later ones winning; nulls kept."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer, delete_on_null=False)
    return merged


def coalesce(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``; a null in ``override`` deletes the key."""
    return _merge(base, override, delete_on_null=True)


def _merge(
    base: Mapping[str, Any], override: Mapping[str, Any], *, delete_on_null: bool
) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if value is None and delete_on_null:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, delete_on_null=delete_on_null)
        else:
            out[key] = copy.deepcopy(value)
    return out
