"""Sign-in with an external OpenID Connect provider (authorization code + PKCE): the browser is
sent to the provider, comes back to the callback, and leaves with a web session. See
docs/identity.md."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from datalab.api.responses import errors
from datalab.errors import NotFound, Unauthenticated
from datalab.http.deps import PlatformDep, start_web_session
from datalab.identity.oidc import OidcClient, provision

router = APIRouter(
    prefix="/api/auth/oidc", tags=["auth"], responses=errors(400, 401, 404, 413, 422)
)

_PENDING = "oidc_pending"


def _client(platform: PlatformDep) -> OidcClient:
    if platform.oidc_client is None:
        raise NotFound("sign-in with an identity provider is not configured (oidc.enabled)")
    return platform.oidc_client


def _safe_next(next_url: str) -> str:
    # only paths on this site: an open redirect would let phishing links borrow our domain
    return next_url if next_url.startswith("/") and not next_url.startswith("//") else "/"


@router.get("/login", summary="Start sign-in at the identity provider (redirect)")
async def login(
    request: Request,
    platform: PlatformDep,
    next: Annotated[str, Query(description="Path to return to after sign-in.")] = "/",
) -> RedirectResponse:
    authorization = await _client(platform).authorization_request()
    request.session[_PENDING] = {
        "state": authorization.state,
        "nonce": authorization.nonce,
        "verifier": authorization.code_verifier,
        "next": _safe_next(next),
    }
    return RedirectResponse(authorization.url, status_code=302)


@router.get("/callback", summary="Where the identity provider sends the browser back")
async def callback(
    request: Request,
    platform: PlatformDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    client = _client(platform)
    pending = request.session.pop(_PENDING, None)
    if error:
        raise Unauthenticated(f"the identity provider refused the sign-in: {error}")
    if not pending or not state or not secrets.compare_digest(state, pending["state"]):
        raise Unauthenticated("sign-in expired or was not started here; start again")
    if not code:
        raise Unauthenticated("the identity provider sent no authorization code")
    tokens = await client.tokens_for_code(code, pending["verifier"], pending["nonce"])
    with platform.db.session() as session:
        user = provision(session, tokens.claims, platform.settings.oidc, platform.settings.region)
        user_id = user.id
        start_web_session(request, session, user)
    if platform.federation is not None:  # S3 or Vault take the provider's tokens
        platform.federation.save(user_id, tokens)
    return RedirectResponse(pending["next"], status_code=302)
