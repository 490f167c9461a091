"""Validation of the names users give for what they store: object keys (and prefixes) and
secret paths, which follow the same rules.

A name cannot climb out of the space it is in: no ``..`` segments, no empty segments, no
leading ``/``, no backslash (stores such as SeaweedFS take it for ``/``), no control or
invisible formatting characters (e.g. U+202E, which displays a name reversed), at most 1024
bytes (S3's limit).
"""

from __future__ import annotations

import unicodedata

from datalab.errors import InvalidInput

MAX_KEY_BYTES = 1024
#: Unicode categories refused: controls, formatting (bidi overrides, zero-width), surrogates,
#: private use, unassigned, line and paragraph separators
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _has_control(key: str) -> bool:
    return any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in key)


def check_key(key: str, *, allow_empty: bool = False, what: str = "object key") -> str:
    """A valid S3 key (or prefix); the message names the problem."""
    if not key:
        if allow_empty:
            return key
        raise InvalidInput(f"{what} is empty; name an object such as 'data/file.csv'")
    if _has_control(key):  # first: a lone surrogate cannot even be encoded
        raise InvalidInput(f"{what} {key!r} contains control or invisible formatting characters")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if "\\" in key:
        raise InvalidInput(f"{what} {key!r} contains a backslash: separate folders with '/'")
    if key.startswith("/"):
        raise InvalidInput(f"{what} {key!r} must not start with '/'")
    segments = key.split("/")
    if any(s in (".", "..") for s in segments):
        raise InvalidInput(f"{what} {key!r} must not contain '.' or '..' segments")
    inner = segments[:-1] if key.endswith("/") else segments
    if any(s == "" for s in inner):
        raise InvalidInput(f"{what} {key!r} contains an empty segment ('//')")
    return key
