"""The platform's token issuer: short-lived, OIDC-style JWTs for its users.

SeaweedFS STS (``AssumeRoleWithWebIdentity``) and OpenBao JWT auth trust this issuer, so
per-user, scoped credentials come from their real flows, exactly as they would with Keycloak.
The RS256 key lives in the data directory (mode 0600); its public half is published as a JWKS on
``/.well-known/jwks.json`` (and, for the embedded servers, on a loopback-only listener that is
up before they start, see :class:`JwksServer`).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from datalab.errors import InvalidToken

#: audiences of the platform's consumers
AUDIENCE_S3 = "datalab-s3"
AUDIENCE_VAULT = "datalab-vault"
AUDIENCE_CREDENTIALS = "datalab-credentials"  # a service's S3 credentials refresh token
AUDIENCE_SERVICE = "datalab-service"  # a service's identity: it reaches its project's services

ALGORITHM = "RS256"


def _load_or_create_key(path: Path) -> RSAKey:
    if path.exists():
        return RSAKey.import_key(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = RSAKey.generate_key(2048)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.as_pem(private=True))
    return key


class TokenIssuer:
    def __init__(self, key_path: Path, issuer_url: str) -> None:
        self.issuer_url = issuer_url.rstrip("/")
        self.key_path = key_path

    @functools.cached_property
    def _key(self) -> RSAKey:
        # created at first use: generating a key takes a noticeable fraction of a second
        return _load_or_create_key(self.key_path)

    @functools.cached_property
    def kid(self) -> str:
        return str(self._key.thumbprint())

    def issue(
        self,
        subject: str,
        audience: str,
        ttl_s: int,
        claims: dict[str, Any] | None = None,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            **(claims or {}),
            "iss": self.issuer_url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now - 5,  # tolerate a little clock skew between processes
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}, payload, self._key)

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        """The claims of a token this issuer signed for ``audience``, still valid."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
            JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer_url},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        return dict(decoded.claims)

    def jwks(self) -> KeySetSerialization:
        public = self._key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}

    def public_key_pem(self) -> str:
        return self._key.as_pem(private=False).decode()

    def key_set(self) -> KeySet:
        return KeySet([self._key])

    def openid_configuration(self, jwks_uri: str | None = None) -> dict[str, Any]:
        return {
            "issuer": self.issuer_url,
            "jwks_uri": jwks_uri or f"{self.issuer_url}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["sub", "name", "preferred_username", "email", "projects"],
        }


class JwksServer:
    """A loopback-only HTTP listener publishing the issuer's discovery document and JWKS.

    The embedded servers fetch keys from it: it is up before they start, whether or not the
    platform's own HTTP server is (tests drive the app in-process)."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "JwksServer.start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/.well-known/jwks.json"

    def start(self) -> None:
        issuer = self.issuer
        jwks_url_holder: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: Mapping[str, object]
                if self.path == "/.well-known/jwks.json":
                    body = issuer.jwks()
                elif self.path == "/.well-known/openid-configuration":
                    body = issuer.openid_configuration(jwks_url_holder[0])
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # key fetches are routine; nothing worth a log line

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        jwks_url_holder.append(self.jwks_url)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="datalab-jwks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
