"""The platform's token issuer: keys in the data directory, JWKS and discovery published,
tokens verified for their audience and lifetime."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from datalab.identity.issuer import AUDIENCE_S3, AUDIENCE_VAULT, InvalidToken, TokenIssuer

from ..conftest import Env


def test_key_is_private_and_kept(tmp_path: Path) -> None:
    first = TokenIssuer(tmp_path / "keys" / "issuer.pem", "http://127.0.0.1:8000/")
    assert not (tmp_path / "keys").exists()  # made at first use, not at every platform start
    assert first.kid
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / "issuer.pem").st_mode) == 0o600
    again = TokenIssuer(tmp_path / "keys" / "issuer.pem", "http://127.0.0.1:8000")
    assert first.kid == again.kid and first.issuer_url == "http://127.0.0.1:8000"


def test_tokens_carry_claims_and_are_checked(tmp_path: Path) -> None:
    issuer = TokenIssuer(tmp_path / "issuer.pem", "http://lab.test")
    token = issuer.issue("alice", AUDIENCE_S3, 60, {"projects": ["project-a"], "name": "Alice"})
    claims = issuer.verify(token, AUDIENCE_S3)
    assert claims["sub"] == "alice" and claims["aud"] == AUDIENCE_S3
    assert claims["iss"] == "http://lab.test" and claims["projects"] == ["project-a"]
    assert claims["exp"] - claims["iat"] == 60
    # anyone can check the signature with the published JWKS
    decoded = jwt.decode(token, KeySet.import_key_set(issuer.jwks()))
    assert decoded.header["kid"] == issuer.kid and decoded.header["alg"] == "RS256"
    with pytest.raises(InvalidToken):
        issuer.verify(token, AUDIENCE_VAULT)
    with pytest.raises(InvalidToken):
        issuer.verify(issuer.issue("alice", AUDIENCE_S3, -10), AUDIENCE_S3)
    stranger = TokenIssuer(tmp_path / "other.pem", "http://lab.test")
    with pytest.raises(InvalidToken):
        issuer.verify(stranger.issue("alice", AUDIENCE_S3, 60), AUDIENCE_S3)
    with pytest.raises(InvalidToken):
        issuer.verify("not.a.token", AUDIENCE_S3)


@pytest.mark.anyio
async def test_discovery_and_jwks_are_published(env: Env) -> None:
    discovery = (await env.http.get("/.well-known/openid-configuration")).json()
    assert discovery["issuer"] == env.platform.settings.server.url()
    assert discovery["jwks_uri"].endswith("/.well-known/jwks.json")
    assert discovery["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = (await env.http.get("/.well-known/jwks.json")).json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and "d" not in keys[0]
