"""Masking secrets in values shown on screens (the launcher's command bar, dry runs).

A value is secret when its schema says ``render: password`` or its name looks like a secret
(password, secret, token, credential, private key): the same rule as in values errors. A schema
can say a field is not one despite its name with ``x-datalab: {secret: false}`` (e.g.
``vault.secret``, which holds secret *paths*).
"""

from __future__ import annotations

import copy
import re
from typing import Any

SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|private.?key", re.IGNORECASE)
MASK = "********"


def is_secret_field(node: dict[str, Any], name: str) -> bool:
    if node.get("render") == "password":
        return True
    hints = node.get("x-datalab")
    if isinstance(hints, dict) and hints.get("secret") is False:
        return False
    return bool(SECRET_NAME.search(name))


def mask_secret_values(values: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every non-empty secret replaced by ``********``."""
    masked = copy.deepcopy(values)
    _mask(masked, schema)
    return masked


def _mask(values: dict[str, Any], schema: dict[str, Any]) -> None:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    properties = properties if isinstance(properties, dict) else {}
    for name, value in values.items():
        node = properties.get(name)
        node = node if isinstance(node, dict) else {}
        if isinstance(value, dict):
            _mask(value, node)
        elif value not in (None, "") and is_secret_field(node, name):
            values[name] = MASK
