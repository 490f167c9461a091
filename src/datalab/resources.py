"""CPU and memory requests/limits from chart values, in Kubernetes quantity notation.

Onyxia charts put them under ``resources.requests.{cpu,memory}`` and
``resources.limits.{cpu,memory}`` ("100m", "2", 0.5, "512Mi", "2Gi", "1G"...). Parsing is pure
so that the platform can count quotas with the same numbers the backend enforces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from datalab.backends.base import BackendError

_MEMORY_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
MIB = 2**20


def parse_cpu(quantity: Any, *, key: str = "cpu") -> float:
    """CPU cores as a float: ``"100m"`` -> 0.1, ``"2"`` -> 2.0, ``1.5`` -> 1.5."""
    number, suffix = _split(quantity, key)
    if suffix == "m":
        number /= 1000
    elif suffix:
        raise BackendError(
            f"{key}: unknown CPU unit {suffix!r} in {quantity!r} (use e.g. 500m or 2)"
        )
    if number <= 0:
        raise BackendError(f"{key}: CPU must be positive, got {quantity!r}")
    return float(number)


def parse_memory_bytes(quantity: Any, *, key: str = "memory") -> int:
    """Bytes: ``"512Mi"`` -> 536870912, ``"1G"`` -> 10**9, ``1048576`` -> 1048576."""
    number, suffix = _split(quantity, key)
    if suffix not in _MEMORY_SUFFIXES:
        raise BackendError(
            f"{key}: unknown memory unit {suffix!r} in {quantity!r} (use e.g. 512Mi, 2Gi or 1G)"
        )
    value = int(number * _MEMORY_SUFFIXES[suffix])
    if value <= 0:
        raise BackendError(f"{key}: memory must be positive, got {quantity!r}")
    return value


def _split(quantity: Any, key: str) -> tuple[Decimal, str]:
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float, str)):
        raise BackendError(f"{key}: expected a quantity like '500m' or '2Gi', got {quantity!r}")
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise BackendError(f"{key}: {quantity!r} is not a valid quantity (e.g. '500m', '2Gi')")
    try:
        return Decimal(match.group(1)), match.group(2)
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits decimals
        raise BackendError(f"{key}: {quantity!r} is not a valid quantity") from exc


@dataclass(frozen=True)
class Resources:
    """Requested and limited CPU (cores) and memory (bytes); None when the values omit them."""

    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request: int | None = None
    memory_limit: int | None = None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Resources:
        """Read ``values["resources"]``; a missing section means no request and no limit."""
        section = values.get("resources") or {}
        if not isinstance(section, dict):
            raise BackendError(f"resources: expected a mapping, got {section!r}")
        requests = section.get("requests") or {}
        limits = section.get("limits") or {}
        for name, part in (("requests", requests), ("limits", limits)):
            if not isinstance(part, dict):
                raise BackendError(f"resources.{name}: expected a mapping, got {part!r}")

        def opt(part: dict[str, Any], field: str, parse: Any, key: str) -> Any:
            value = part.get(field)
            return None if value in (None, "") else parse(value, key=key)

        resources = cls(
            cpu_request=opt(requests, "cpu", parse_cpu, "resources.requests.cpu"),
            cpu_limit=opt(limits, "cpu", parse_cpu, "resources.limits.cpu"),
            memory_request=opt(requests, "memory", parse_memory_bytes, "resources.requests.memory"),
            memory_limit=opt(limits, "memory", parse_memory_bytes, "resources.limits.memory"),
        )
        if (
            resources.cpu_request is not None
            and resources.cpu_limit is not None
            and resources.cpu_request > resources.cpu_limit
        ):
            raise BackendError("resources: requests.cpu is larger than limits.cpu")
        if (
            resources.memory_request is not None
            and resources.memory_limit is not None
            and resources.memory_request > resources.memory_limit
        ):
            raise BackendError("resources: requests.memory is larger than limits.memory")
        return resources

    def to_status(self) -> dict[str, Any]:
        """What :attr:`ServiceStatus.resources` shows and quotas count.

        ``cpu``/``memory_mb`` are the requests, defaulting to the limits as Kubernetes does;
        the limits are given too when set.
        """
        cpu = self.cpu_request if self.cpu_request is not None else self.cpu_limit
        memory = self.memory_request if self.memory_request is not None else self.memory_limit
        out: dict[str, Any] = {}
        if cpu is not None:
            out["cpu"] = cpu
        if memory is not None:
            out["memory_mb"] = round(memory / MIB)
        if self.cpu_limit is not None:
            out["cpu_limit"] = self.cpu_limit
        if self.memory_limit is not None:
            out["memory_limit_mb"] = round(self.memory_limit / MIB)
        return out
