"""Chart versions: their order, and Helm's version constraints (``Chart.yaml`` dependencies).

Helm matches a dependency's ``version`` with the Masterminds semver rules, reproduced here:
constraints joined by ``,`` or spaces must all hold, alternatives are separated by ``||``;
operators ``=``, ``!=``, ``>``, ``<``, ``>=``, ``<=``, ``~`` (same minor), ``^`` (same major,
or same minor below 1.0), wildcards ``x``/``X``/``*``, and hyphen ranges ``1.2 - 1.4``. A
constraint without a pre-release never matches a pre-release version.
"""

from __future__ import annotations

import re
from typing import Any

from datalab.errors import ChartInvalid

_VERSION = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$")
_PART = r"v?(?:\d+|[xX*])(?:\.(?:\d+|[xX*]))?(?:\.(?:\d+|[xX*]))?(?:-[0-9A-Za-z.-]+)?(?:\+\S*)?"
_TERM = re.compile(rf"^(=|!=|>=|=>|<=|=<|>|<|~>|~|\^)?\s*({_PART})$")
_HYPHEN = re.compile(rf"^({_PART})\s+-\s+({_PART})$")

Release = tuple[int, int, int]
Parsed = tuple[Release, tuple[Any, ...] | None]  # (major, minor, patch), pre-release or None


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order (pre-releases before the release); odd strings sort last."""
    parsed = _parse(version)
    if parsed is None:
        return (-1, version)
    release, pre = parsed
    return (0, release, 1, ()) if pre is None else (0, release, 0, pre)


def satisfies(version: str, constraint: str) -> bool:
    """Whether ``version`` meets Helm's ``constraint`` (raises :class:`ChartInvalid` when the
    constraint cannot be read)."""
    parsed = _parse(version)
    if parsed is None:
        return False
    return any(_all_hold(parsed, group, constraint) for group in constraint.split("||"))


def _parse(version: str) -> Parsed | None:
    match = _VERSION.match(version.strip())
    if not match:
        return None
    major, minor, patch, pre = match.groups()
    release = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return release, None
    return release, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))


def _all_hold(version: Parsed, group: str, constraint: str) -> bool:
    group = group.strip()
    hyphen = _HYPHEN.match(group)
    terms = [f">={hyphen[1]}", f"<={hyphen[2]}"] if hyphen else _split_terms(group)
    if not terms:
        terms = ["*"]
    allows_pre = False
    for term in terms:
        match = _TERM.match(term)
        if not match:
            raise ChartInvalid(f"cannot read the version constraint {constraint!r} (at {term!r})")
        operator, bound = match[1] or "=", match[2]
        allows_pre = allows_pre or "-" in bound.split("+")[0]
        if not _holds(version, operator, bound):
            return False
    return version[1] is None or allows_pre


def _split_terms(group: str) -> list[str]:
    """``>= 1.2, < 2`` and ``>=1.2 <2`` -> ``['>=1.2', '<2']`` (an operator may be followed
    by spaces)."""
    tokens = [t for t in re.split(r"[\s,]+", group) if t]
    terms: list[str] = []
    for token in tokens:
        if terms and re.fullmatch(r"(=|!=|>=|=>|<=|=<|>|<|~>|~|\^)", terms[-1]):
            terms[-1] += token
        else:
            terms.append(token)
    return terms


def _holds(version: Parsed, operator: str, bound: str) -> bool:
    parts = bound.lstrip("v").split("-")[0].split("+")[0].split(".")
    wild = [p in ("x", "X", "*") for p in parts] + [True] * (3 - len(parts))
    numbers = [0 if w or i >= len(parts) else int(parts[i]) for i, w in enumerate(wild)]
    known = wild.index(True) if True in wild else 3  # how many leading parts are given
    # comparisons read a missing part as 0 ("> 1.2" is "> 1.2.0"), an explicit x as any
    explicit = next((i for i, p in enumerate(parts) if p in ("x", "X", "*")), 3)
    pre = _parse(bound.lstrip("v").replace("x", "0").replace("X", "0").replace("*", "0"))
    low: Parsed = ((numbers[0], numbers[1], numbers[2]), pre[1] if pre and known == 3 else None)
    key = _key(version)
    if operator in ("=", "!="):
        inside = _in_prefix(version, numbers, known) if known < 3 else key == _key(low)
        return inside if operator == "=" else not inside
    if operator in (">=", "=>"):
        return key >= _key(low)
    if operator == ">":
        return key > _key(low) and not (explicit < 3 and _in_prefix(version, numbers, explicit))
    if operator in ("<=", "=<"):
        return key <= _key(low) or (explicit < 3 and _in_prefix(version, numbers, explicit))
    if operator == "<":
        return key < _key(low)
    if operator in ("~", "~>"):
        return key >= _key(low) and _in_prefix(version, numbers, max(1, min(known, 2)))
    # "^": the leftmost non-zero part given stays the same
    fixed = next((i + 1 for i in range(known) if numbers[i] != 0), max(known, 1))
    return key >= _key(low) and _in_prefix(version, numbers, min(fixed, 3))


def _in_prefix(version: Parsed, numbers: list[int], count: int) -> bool:
    return list(version[0][:count]) == numbers[:count]


def _key(version: Parsed) -> tuple[Any, ...]:
    release, pre = version
    return (release, 1, ()) if pre is None else (release, 0, pre)
