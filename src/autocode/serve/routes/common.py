"""What the routers share: the authentication dependency, the OpenAPI security declarations
of protected routes, and 422 errors in FastAPI's shape."""

from collections.abc import Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError

from autocode.serve import schemas
from autocode.serve.auth import CHALLENGE, AuthError, Principal
from autocode.serve.state import ApiState

SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}, {"Basic": []}]
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer", "description": "An API key as bearer token."},
    "Basic": {"type": "http", "scheme": "basic"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing, invalid or revoked credentials."},
    422: {"model": schemas.ValidationErrorBody, "description": "Invalid input; names the field."},
    503: {"model": schemas.ErrorBody, "description": "No model loaded yet, or log unavailable."},
}
#: the keyword arguments of a route that needs credentials
PROTECTED: dict[str, Any] = {"openapi_extra": {"security": SECURITY}, "responses": ERRORS}


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def authenticated(request: Request) -> Principal:
    """The caller (API key, bearer or Basic credentials); 401 with the challenge otherwise."""
    try:
        return await api_state(request).auth.authenticate(request.headers)
    except AuthError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": CHALLENGE}) from None


def validation_error(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError(errors)


def clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        out.append({"loc": loc, "msg": message, "type": str(error.get("type"))})
    return out


def field_path(loc: Sequence[Any]) -> str:
    if len(loc) == 2 and loc[0] == "body" and isinstance(loc[1], int):  # JSON syntax error
        return f"body (character {loc[1]})"
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text or "request"
