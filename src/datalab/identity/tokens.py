"""Personal API tokens: random, shown once, stored as a SHA-256 digest, revocable, expiring."""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "dlb_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(value: str) -> bool:
    return value.startswith(PREFIX) and 20 <= len(value) <= 100
