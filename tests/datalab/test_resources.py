"""Every service has limits within the region's bounds (datalab.resources.with_limits), and
quantities users write cannot make the platform compute for long."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from datalab.backends.base import BackendError
from datalab.config import ConfigError, load_settings
from datalab.resources import MIB, LimitRule, parse_memory_bytes, with_limits

RULE = LimitRule(default_cpu="2", default_memory="4Gi", max_cpu=8, max_memory=32768 * MIB)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"resources": None},
        {"resources": {"limits": None}},
        {"resources": {"limits": {}}},
        {"resources": {"limits": {"cpu": None, "memory": ""}}},
        {"resources": {"requests": {"cpu": "100m"}}},
    ],
)
def test_missing_limits_get_the_region_defaults(values: dict[str, Any]) -> None:
    given = copy.deepcopy(values)
    limited, cpu, memory_mb = with_limits(values, RULE)
    assert limited["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert (cpu, memory_mb) == (2.0, 4096)
    assert values == given  # the caller's values are not changed


def test_given_limits_are_counted_memory_rounded_up() -> None:
    values = {"resources": {"limits": {"cpu": "500m", "memory": "1.5Mi"}}}
    assert with_limits(values, RULE)[1:] == (0.5, 2)


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"cpu": "9"}, "more than this region allows"),
        ({"memory": "33Gi"}, "more than this region allows"),
        ({"cpu": "1e9"}, "more than this region allows"),
        ({"cpu": "5m"}, "less than the smallest limit"),
        ({"memory": "1Ki"}, "less than the smallest limit"),
        ({"cpu": "0"}, "must be positive"),
        ({"cpu": "-1"}, "not a valid quantity"),
        ({"memory": "1e999999"}, "too large"),
        ({"memory": "9" * 100}, "not a valid quantity"),
        ("none", "expected a mapping"),
    ],
)
def test_limits_out_of_bounds_are_refused(limits: Any, fragment: str) -> None:
    with pytest.raises(BackendError, match=fragment):
        with_limits({"resources": {"limits": limits}}, RULE)


def test_without_a_default_a_limit_is_required() -> None:
    rule = LimitRule(default_cpu=None, default_memory="1Gi", max_cpu=8, max_memory=2**40)
    with pytest.raises(BackendError, match=r"set resources\.limits\.cpu"):
        with_limits({}, rule)


def test_huge_exponents_are_refused_at_once() -> None:
    started = time.monotonic()
    for quantity in ("1e999999", "1e999999999", "1e999999Ei", "1e-999999999"):
        with pytest.raises(BackendError):
            parse_memory_bytes(quantity)
    assert time.monotonic() - started < 0.5  # "1e999999" took a minute to become an int


def test_region_defaults_are_checked_at_load(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cpuLimit"):
        load_settings(None, data_dir=tmp_path, region={"default_resources": {"cpuLimit": "x"}})
    with pytest.raises(ConfigError, match="max_resources"):
        load_settings(
            None,
            data_dir=tmp_path,
            region={"default_resources": {"cpuLimit": "16"}, "max_resources": {"cpu": 8}},
        )
