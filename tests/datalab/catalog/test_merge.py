"""Values merge as Helm merges them: user layers (``-f a -f b --set``) in order, then onto the
chart's values, where null deletes."""

from __future__ import annotations

from typing import Any

from datalab.catalog.merge import coalesce, merge_layers


def test_layers_merge_deeply_in_order_and_keep_nulls() -> None:
    first: dict[str, Any] = {
        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        "tags": ["a", "b"],
    }
    second = {"resources": {"limits": {"cpu": "2"}}, "tags": ["c"]}
    third = {"resources": {"limits": {"memory": None}}, "extra": {"x": 1}}
    merged = merge_layers(first, second, third)
    assert merged == {
        "resources": {"limits": {"cpu": "2", "memory": None}},  # deep, later wins, null kept
        "tags": ["c"],  # lists replace, as in Helm
        "extra": {"x": 1},
    }
    assert first["resources"]["limits"]["cpu"] == "1"  # the layers are not changed


def test_coalescing_onto_the_charts_values_deletes_on_null() -> None:
    chart = {"resources": {"limits": {"cpu": "4", "memory": "8Gi"}}, "service": {"port": 80}}
    user = merge_layers({"resources": {"limits": {"memory": None}}}, {"service": {"port": 81}})
    assert coalesce(chart, user) == {
        "resources": {"limits": {"cpu": "4"}},
        "service": {"port": 81},
    }
    # a mapping replacing a scalar, and a scalar replacing a mapping
    assert coalesce({"a": 1, "b": {"c": 1}}, {"a": {"x": 1}, "b": 2}) == {"a": {"x": 1}, "b": 2}
