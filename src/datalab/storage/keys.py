"""Validation of bucket names and object keys given by users.

Every storage call names a bucket the caller may use (their personal project's and the one they
act in) and a key that cannot climb out of it: no ``..`` segments, no empty segments, no leading
``/``, no backslash (stores such as SeaweedFS take it for ``/``), no control or invisible
formatting characters (e.g. U+202E, which displays a name reversed), at most 1024 bytes (S3's
limit). Secret paths follow the same rules.
"""

from __future__ import annotations

import unicodedata

from datalab.errors import Forbidden, InvalidInput
from datalab.identity.access import Principal, may_use_space, spaces

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


def check_bucket(principal: Principal, bucket: str, personal_project: str) -> str:
    """The bucket, if the caller may use it (:func:`datalab.identity.access.spaces`): their
    personal project's, or the project they act in's."""
    if not may_use_space(principal, bucket, personal_project):
        raise Forbidden(
            f"bucket {bucket!r} is not yours: you can use "
            f"{', '.join(spaces(principal, personal_project))} "
            "(switch project with X-Datalab-Project or --project to use another project's)"
        )
    return bucket
