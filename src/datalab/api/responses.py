"""The API's error answers, documented in the OpenAPI schema once per router (``responses=``).

Every error has the same body, ``{"error": {"code", "message", "details"}}``
(:class:`datalab.http.schemas.ErrorResponse`), made by the app's error handlers from the
:mod:`datalab.errors` a handler raises; a test runs Schemathesis against the schema
(tests/datalab/test_api_fuzz.py), so an answer missing here fails it.
"""

from __future__ import annotations

from typing import Any

from datalab.http.schemas import ErrorResponse

MEANINGS = {
    400: "The request body cannot be read: send JSON encoded in UTF-8.",
    401: "Not authenticated: no credentials, an unknown, expired or revoked API token, or a web "
    "session that has ended.",
    403: "Not allowed: not an administrator, not a member of the project, not the owner, over "
    "quota, or (web sessions) a missing or wrong X-CSRF-Token header.",
    404: "No such resource, or none the caller may see.",
    409: "Conflicts with what exists: a name already taken, a resource in use.",
    413: "The request body is larger than this server accepts (server.max_request_bytes; "
    "storage.max_upload_bytes for uploads).",
    422: "The request is invalid: the message names the field and the problem.",
    429: "Too many failed sign-ins for this account from this client: wait Retry-After seconds.",
    503: "The object storage, the secrets store or the execution backend (e.g. the Kubernetes "
    "API) is not enabled, or is unavailable: try again shortly.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a router: these error answers, with the API's error body."""
    return {
        status: {"model": ErrorResponse, "description": MEANINGS[status]} for status in statuses
    }


#: the answers of a router whose operations need an authenticated caller
AUTHENTICATED = errors(400, 401, 403, 404, 409, 413, 422)
#: the same, for operations that reach the object storage, the secrets store or the backend
WITH_STORES = errors(400, 401, 403, 404, 409, 413, 422, 503)
#: signing in (password checks are throttled)
SIGN_IN = errors(400, 401, 403, 413, 422, 429)


def content(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for an operation whose success is not JSON (errors still are)."""
    return {200: {"description": description, "content": {media_type: {"schema": {}}}}}
