"""Quota bypass: a service always has CPU and memory limits, within the region's maximum, and
the quota counts them. Every attempt is a launch through the API, on the real local backend,
that tries to start a service uncounted (or counted for less than it may use) or over the
region's maximum: missing, null, empty, zero, negative, huge or odd limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import Ledger, Tenancy, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]

CHART = "jupyter-python"

#: name -> what the launch request adds to {"chart", "name"}
ATTEMPTS: dict[str, dict[str, Any]] = {
    "null limits": {"values": {"resources": {"limits": None}}},
    "null resources": {"values": {"resources": None}},
    "null cpu and memory": {"values": {"resources": {"limits": {"cpu": None, "memory": None}}}},
    "empty limits": {"values": {"resources": {"limits": {}}}},
    "empty strings": {"values": {"resources": {"limits": {"cpu": "", "memory": ""}}}},
    "null in YAML": {"values_yaml": "resources:\n  limits: ~\n"},
    "null with --set": {"set": ["resources.limits.cpu=null", "resources.limits.memory=null"]},
    "zero": {"values": {"resources": {"limits": {"cpu": "0", "memory": "0"}}}},
    "zero numbers": {"values": {"resources": {"limits": {"cpu": 0, "memory": 0}}}},
    "negative": {"values": {"resources": {"limits": {"cpu": "-1", "memory": "-1Gi"}}}},
    "negative numbers": {"values": {"resources": {"limits": {"cpu": -2, "memory": -1}}}},
    "huge cpu": {"values": {"resources": {"limits": {"cpu": "100000"}}}},
    "huge memory": {"values": {"resources": {"limits": {"memory": "1024Ti"}}}},
    "exponent numbers": {"values": {"resources": {"limits": {"cpu": 1e9, "memory": 1e30}}}},
    "exponent strings": {"values": {"resources": {"limits": {"cpu": "1e9", "memory": "1e9"}}}},
    "a huge exponent": {"values": {"resources": {"limits": {"memory": "1e999999"}}}},
    "infinity": {"values": {"resources": {"limits": {"cpu": 1e308 * 10}}}},
    "tiny cpu": {"values": {"resources": {"limits": {"cpu": "0.0001m"}}}},
    "tiny memory": {"values": {"resources": {"limits": {"memory": "1"}}}},
    "requests instead of limits": {
        "values": {"resources": {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": None}}
    },
    "limits as a list": {"values": {"resources": {"limits": ["cpu", "memory"]}}},
    "limits as a string": {"values": {"resources": {"limits": "none"}}},
    "just over the maximum": {"values": {"resources": {"limits": {"cpu": "8001m"}}}},
}


async def test_no_service_starts_uncounted_or_over_the_maximum(
    tenancy: Tenancy, ledger: Ledger
) -> None:
    mallory = tenancy.users["mallory"]
    region = tenancy.platform.settings.region
    most_cpu, most_memory_mb = region.max_resources.cpu, region.max_resources.memory_mb
    started = 0
    for number, (what, extra) in enumerate(ATTEMPTS.items()):
        before = (await mallory.call("GET", "/api/quota"))["usage"]
        name = f"greedy-{number}"
        # not json=: Python's json writes infinity as Infinity, which is not JSON
        body = json.dumps({"chart": CHART, "name": name, **extra}, allow_nan=True)
        answer = await mallory.http.post(
            "/api/services",
            content=body.encode(),
            headers={**mallory.headers(), "Content-Type": "application/json"},
        )
        assert answer.status_code < 500, (what, answer.text)
        if answer.status_code != 200:
            ledger.expect_denied("quota", what, False, answer.text[:200])
            continue
        started += 1
        try:
            service = await mallory.call("GET", f"/api/services/{name}")
            after = (await mallory.call("GET", "/api/quota"))["usage"]
        finally:
            await mallory.call("DELETE", f"/api/services/{name}")
        enforced = service["resources"]  # what the backend enforces
        counted_cpu = after["cpu"] - before["cpu"]
        counted_memory = after["memory_mb"] - before["memory_mb"]
        limits = (service["values"].get("resources") or {}).get("limits")
        problems = []
        if "cpu_limit" not in enforced or "memory_limit_mb" not in enforced:
            problems.append(f"runs without a limit: {enforced}")
        else:
            if counted_cpu + 1e-6 < enforced["cpu_limit"]:
                problems.append(f"counted {counted_cpu} cores, may use {enforced['cpu_limit']}")
            if counted_memory < enforced["memory_limit_mb"]:
                problems.append(
                    f"counted {counted_memory} MiB, may use {enforced['memory_limit_mb']}"
                )
            if enforced["cpu_limit"] > most_cpu or enforced["memory_limit_mb"] > most_memory_mb:
                problems.append(f"over the region's maximum: {enforced}")
        ledger.expect_denied("quota", what, bool(problems), f"{problems} limits={limits}")
        # what the defaults give: the region's default limits, counted
        assert counted_cpu > 0 and counted_memory > 0
    assert started >= 5  # the missing and null limits started, with the region's defaults
    usage = (await mallory.call("GET", "/api/quota"))["usage"]
    assert usage["services"] == 0
