"""Kubernetes resource quantities ("100m", "2", "512Mi", "4Gi") in cores and MiB, and the
resources a service's values ask for (Onyxia charts: ``resources.limits`` / ``requests``)."""

from __future__ import annotations

import re
from typing import Any

from datalab.errors import InvalidInput

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_MEMORY_FACTORS_MIB = {
    "": 1 / 2**20,
    "k": 1e3 / 2**20,
    "M": 1e6 / 2**20,
    "G": 1e9 / 2**20,
    "T": 1e12 / 2**20,
    "Ki": 1 / 2**10,
    "Mi": 1.0,
    "Gi": 2**10,
    "Ti": 2**20,
}


def parse_cpu(value: str | float | int) -> float:
    """Cores: ``"100m"`` → 0.1, ``"2"`` → 2.0."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in ("", "m"):
        raise InvalidInput(f"CPU quantity {value!r} is not valid; use e.g. '500m' or '2'")
    number = float(match.group(1))
    return number / 1000 if match.group(2) == "m" else number


def parse_memory_mb(value: str | float | int) -> int:
    """MiB: ``"512Mi"`` → 512, ``"4Gi"`` → 4096, ``"1G"`` → 953."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _MEMORY_FACTORS_MIB:
        raise InvalidInput(f"memory quantity {value!r} is not valid; use e.g. '512Mi' or '4Gi'")
    return round(float(match.group(1)) * _MEMORY_FACTORS_MIB[match.group(2)])


def requested_resources(values: dict[str, Any]) -> tuple[float, int]:
    """(cores, MiB) a service may use: its limits, else its requests, else nothing."""
    resources = values.get("resources")
    if not isinstance(resources, dict):
        return 0.0, 0
    cpu, memory = 0.0, 0
    for section in ("requests", "limits"):  # limits win when both are set
        block = resources.get(section)
        if not isinstance(block, dict):
            continue
        if block.get("cpu") not in (None, ""):
            cpu = parse_cpu(block["cpu"])
        if block.get("memory") not in (None, ""):
            memory = parse_memory_mb(block["memory"])
    return cpu, memory
