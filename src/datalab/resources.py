"""CPU and memory requests/limits from chart values, in Kubernetes quantity notation.

Onyxia charts put them under ``resources.requests.{cpu,memory}`` and
``resources.limits.{cpu,memory}`` ("100m", "2", 0.5, "512Mi", "2Gi", "1G"...). Parsing is pure
so that the platform can count quotas with the same numbers the backend enforces.

Every service has limits (:func:`with_limits`): the ones its values give, within the region's
bounds, else the region's defaults, written into its values so that the backend enforces what
the quotas count.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from datalab.errors import BackendError

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
#: no quantity is larger (an exabyte, a billion cores): bounds the arithmetic on what users
#: write ("1e999999" would otherwise take a minute to become an integer)
_LARGEST = Decimal(10) ** 18
_LONGEST = 64  # characters of a quantity
#: the smallest CPU limit every enforcement takes (cgroup v2's cpu.max: 1 ms per 100 ms)
MIN_CPU_LIMIT = 0.01
#: the smallest memory limit: quotas count MiB
MIN_MEMORY_LIMIT = MIB


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
    text = str(quantity)
    match = _QUANTITY.match(text) if len(text) <= _LONGEST else None
    if not match:
        raise BackendError(f"{key}: {quantity!r} is not a valid quantity (e.g. '500m', '2Gi')")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex only admits decimals
        raise BackendError(f"{key}: {quantity!r} is not a valid quantity") from exc
    if number > _LARGEST:
        raise BackendError(f"{key}: {quantity!r} is too large")
    return number, match.group(2)


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
        """What :attr:`ServiceStatus.resources` shows (quotas count the limits instead).

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


@dataclass(frozen=True)
class LimitRule:
    """A region's rule for services' limits: the defaults given to a service whose values set
    none (quantities as written in the region's configuration; None: no default, the user must
    set one), and the largest limits one service may have."""

    default_cpu: str | None
    default_memory: str | None
    max_cpu: float  # cores
    max_memory: int  # bytes


def with_limits(values: dict[str, Any], rule: LimitRule) -> tuple[dict[str, Any], float, int]:
    """``values`` with ``resources.limits.cpu`` and ``.memory`` always set, and what the
    service counts against quotas: its CPU limit (cores) and memory limit (MiB, rounded up).

    A limit that is missing, null or empty becomes the rule's default; every limit must be
    within ``[MIN_*_LIMIT, rule.max_*]``. Raises :class:`BackendError` naming the key and what
    to do. ``values`` is not changed.
    """
    values = copy.deepcopy(values)
    section = values.get("resources")
    if section is None:
        section = values["resources"] = {}
    if not isinstance(section, dict):
        raise BackendError(f"resources: expected a mapping, got {section!r}")
    limits = section.get("limits")
    if limits is None:
        limits = section["limits"] = {}
    if not isinstance(limits, dict):
        raise BackendError(f"resources.limits: expected a mapping, got {limits!r}")
    for field, default in (("cpu", rule.default_cpu), ("memory", rule.default_memory)):
        if limits.get(field) in (None, ""):
            if default is None:
                raise BackendError(
                    f"resources.limits.{field}: every service needs a {field} limit and this "
                    f"region has no default; set resources.limits.{field}"
                )
            limits[field] = default
    resources = Resources.from_values(values)
    assert resources.cpu_limit is not None and resources.memory_limit is not None
    _check_bounds(
        "resources.limits.cpu",
        resources.cpu_limit,
        MIN_CPU_LIMIT,
        rule.max_cpu,
        lambda cores: f"{cores:g} cores",
    )
    _check_bounds(
        "resources.limits.memory",
        resources.memory_limit,
        MIN_MEMORY_LIMIT,
        rule.max_memory,
        lambda size: f"{size / MIB:g} MiB",
    )
    return values, resources.cpu_limit, math.ceil(resources.memory_limit / MIB)


def _check_bounds(
    key: str, value: float, least: float, most: float, show: Callable[[float], str]
) -> None:
    if value < least:
        raise BackendError(f"{key}: {show(value)} is less than the smallest limit, {show(least)}")
    if value > most:
        raise BackendError(
            f"{key}: {show(value)} is more than this region allows for one service "
            f"({show(most)}); ask for less"
        )
