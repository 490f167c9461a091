"""Names that end up in URLs, Kubernetes objects and Helm releases must be RFC 1123 labels."""

from __future__ import annotations

import re

from datalab.errors import InvalidInput

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RESERVED_USER_NAMES = frozenset({"admin-api", "api", "static", "system", "root"})


def check_label(value: str, what: str, max_length: int = 63) -> str:
    if not value or len(value) > max_length or not _LABEL.match(value):
        raise InvalidInput(
            f"{what} {value!r} is not valid: use 1 to {max_length} lowercase letters, digits or "
            "'-', starting and ending with a letter or digit (RFC 1123), e.g. 'my-service-1'"
        )
    return value
