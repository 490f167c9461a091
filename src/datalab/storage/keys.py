"""Validation of bucket names and object keys given by users.

Every storage call names a bucket the caller may use (their personal project's and the one they
act in) and a key that cannot climb out of it: no ``..`` segments, no empty segments, no leading
``/``, no control characters, at most 1024 bytes (S3's limit).
"""

from __future__ import annotations

import re

from datalab.errors import Forbidden, InvalidInput
from datalab.identity.access import Principal

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024


def check_key(key: str, *, allow_empty: bool = False, what: str = "object key") -> str:
    """A valid S3 key (or prefix); the message names the problem."""
    if not key:
        if allow_empty:
            return key
        raise InvalidInput(f"{what} is empty; name an object such as 'data/file.csv'")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidInput(f"{what} {key!r} contains control characters")
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
    """The bucket, if the caller may use it: their own, or the project they act in."""
    allowed = {personal_project, principal.project_id}
    if bucket not in allowed:
        raise Forbidden(
            f"bucket {bucket!r} is not yours: you can use {', '.join(sorted(allowed))} "
            "(switch project with X-Datalab-Project or --project to use another project's)"
        )
    return bucket
