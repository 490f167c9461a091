"""Errors a user can cause, each with its HTTP status. The API turns them into
``{"error": {"code": ..., "message": ...}}``; the CLI prints the message and exits non-zero."""

from __future__ import annotations

from typing import Any


class DatalabError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthenticated(DatalabError):
    status, code = 401, "unauthenticated"


class Forbidden(DatalabError):
    status, code = 403, "forbidden"


class NotFound(DatalabError):
    status, code = 404, "not_found"


class Conflict(DatalabError):
    status, code = 409, "conflict"


class InvalidInput(DatalabError):
    status, code = 422, "invalid"


class QuotaExceeded(DatalabError):
    status, code = 403, "quota_exceeded"


class TooManyRequests(DatalabError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
