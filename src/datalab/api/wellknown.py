"""The platform's token issuer, published as an OIDC discovery document and a JWKS (no
authentication: relying parties such as an external S3's STS or Vault's JWT auth fetch them).

Their shapes are the standards' (OpenID Connect Discovery 1.0, RFC 7517), outside the API's
OpenAPI document: plain JSON objects here, not response models that would restate them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from datalab.errors import NotFound
from datalab.http.deps import PlatformDep
from datalab.identity.issuer import TokenIssuer

# outside the API (and its OpenAPI document): standard locations, described in docs/identity.md
router = APIRouter(prefix="/.well-known", tags=["identity"])


def _issuer(platform: PlatformDep) -> TokenIssuer:
    if platform.issuer is None:
        raise NotFound("this platform has no token issuer")
    return platform.issuer


@router.get("/openid-configuration", include_in_schema=False)
def openid_configuration(platform: PlatformDep) -> dict[str, Any]:
    return _issuer(platform).openid_configuration()


@router.get("/jwks.json", include_in_schema=False)
def jwks(platform: PlatformDep) -> dict[str, Any]:
    return dict(_issuer(platform).jwks())
