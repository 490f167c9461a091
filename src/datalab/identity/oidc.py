"""Sign-in with an external OpenID Connect provider: authorization code flow with PKCE (S256),
ID token checked with the provider's JWKS (signature, issuer, audience, expiry, nonce), then the
user and their group projects provisioned from the claims.

Groups become projects: each group matching one of ``group_include`` and none of
``group_exclude`` is rewritten with ``re.sub(group_pattern, group_replacement, group)``, turned
into a DNS label, and prefixed with ``region.project_prefix``. Memberships of group projects the
user is no longer in are removed at each sign-in. Local projects are never touched.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session

from datalab.config import OidcSettings, RegionSettings
from datalab.db import Membership, Project, User
from datalab.errors import Forbidden, OidcUnavailable, Unauthenticated
from datalab.identity.accounts import personal_project_id
from datalab.identity.names import RESERVED_USER_NAMES

DISCOVERY_TTL_S = 3600
#: where the provider sends the browser back (the API route)
CALLBACK_PATH = "/api/auth/oidc/callback"
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


def s256_challenge(verifier: str) -> str:
    """PKCE code challenge, method S256 (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def to_label(value: str, max_length: int = 63) -> str:
    """A DNS label from a user or group name: lowercase, other characters become '-'."""
    label = _NOT_LABEL.sub("-", value.lower()).strip("-")
    return label[:max_length].strip("-")


def projects_for_groups(groups: list[str], settings: OidcSettings) -> list[str]:
    """Project names (without prefix) for a user's groups, per include/exclude/transform."""
    names = set()
    for group in groups:
        if not any(re.fullmatch(p, group) for p in settings.group_include):
            continue
        if any(re.fullmatch(p, group) for p in settings.group_exclude):
            continue
        name = to_label(re.sub(settings.group_pattern, settings.group_replacement, group))
        if name:
            names.add(name)
    return sorted(names)


@dataclass(frozen=True)
class ProviderTokenSet:
    """What the provider's token endpoint answered: the checked ID token and its claims, and
    the refresh token when the provider gives one."""

    claims: dict[str, Any]
    id_token: str
    refresh_token: str | None

    @property
    def expires_at(self) -> float:
        return float(self.claims["exp"])


@dataclass
class AuthorizationRequest:
    url: str
    state: str
    nonce: str
    code_verifier: str


@dataclass
class OidcClient:
    settings: OidcSettings
    redirect_uri: str
    _discovery: dict[str, Any] = field(default_factory=dict)
    _discovered_at: float = 0.0
    _keys: KeySet | None = None

    @property
    def client_id(self) -> str:
        assert self.settings.client_id
        return self.settings.client_id

    async def discovery(self) -> dict[str, Any]:
        if not self._discovery or time.monotonic() - self._discovered_at > DISCOVERY_TTL_S:
            issuer = (self.settings.issuer_url or "").rstrip("/")
            document = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            keys = await self._get_json(document["jwks_uri"])
            # the provider's JWKS document, checked by import_key_set
            jwks = cast(KeySetSerialization, keys)
            self._discovery, self._keys = document, KeySet.import_key_set(jwks)
            self._discovered_at = time.monotonic()
        return self._discovery

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(url)
                response.raise_for_status()
                return dict(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcUnavailable(
                f"the identity provider is unavailable ({url}): {type(exc).__name__}"
            ) from None

    async def authorization_request(self) -> AuthorizationRequest:
        document = await self.discovery()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(64)  # 86 characters: within RFC 7636's 43..128
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.settings.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
        url = f"{document['authorization_endpoint']}?{urlencode(query)}"
        return AuthorizationRequest(url, state, nonce, verifier)

    async def tokens_for_code(self, code: str, code_verifier: str, nonce: str) -> ProviderTokenSet:
        """Exchange the code for tokens; the ID token checked (with the sign-in's nonce)."""
        answer = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": code_verifier,
            },
            refused="the identity provider refused the sign-in ({status}); try again",
        )
        id_token = answer.get("id_token")
        if not id_token:
            raise Unauthenticated("the identity provider returned no ID token")
        claims = self.verify_id_token(id_token, nonce)
        return ProviderTokenSet(claims, id_token, answer.get("refresh_token"))

    async def refresh(self, refresh_token: str) -> ProviderTokenSet:
        """New tokens from a refresh token (OpenID Connect Core, section 12). Providers that
        answer without a new ID token (some only renew access tokens) cannot be used."""
        answer = await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            refused="the identity provider refused to renew the sign-in ({status})",
        )
        id_token = answer.get("id_token")
        if not id_token:
            raise Unauthenticated("the identity provider renewed the sign-in without an ID token")
        claims = self.verify_id_token(id_token, None)
        return ProviderTokenSet(claims, id_token, answer.get("refresh_token") or refresh_token)

    async def _token_request(self, form: dict[str, str], refused: str) -> dict[str, Any]:
        document = await self.discovery()
        extra: dict[str, Any] = {}
        if self.settings.client_secret is not None:  # else a public client: PKCE only
            extra["auth"] = (self.client_id, self.settings.client_secret.get_secret_value())
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    document["token_endpoint"], data={**form, "client_id": self.client_id}, **extra
                )
        except httpx.HTTPError as exc:
            raise OidcUnavailable(
                f"the identity provider's token endpoint is unavailable: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise Unauthenticated(refused.format(status=response.status_code))
        try:
            return dict(response.json())
        except ValueError:
            raise OidcUnavailable(
                "the identity provider's token endpoint answered no JSON"
            ) from None

    def verify_id_token(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        """The claims of an ID token signed by the provider for this client, still valid; the
        nonce is checked on sign-in (ID tokens from a refresh may omit it)."""
        assert self._keys is not None
        expected: dict[str, Any] = {
            "iss": {"essential": True, "value": self._discovery["issuer"]},
            "aud": {"essential": True, "value": self.settings.audience or self.client_id},
            "exp": {"essential": True},
        }
        if nonce is not None:
            expected["nonce"] = {"essential": True, "value": nonce}
        try:
            decoded = jwt.decode(id_token, self._keys, algorithms=["RS256", "ES256", "PS256"])
            JWTClaimsRegistry(**expected).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"invalid ID token from the identity provider: {exc}") from None
        return dict(decoded.claims)


def provision(
    session: Session, claims: dict[str, Any], settings: OidcSettings, region: RegionSettings
) -> User:
    """The user named by the claims (created at first sign-in), with their group projects."""
    raw_name = claims.get(settings.username_claim)
    if not isinstance(raw_name, str) or not raw_name:
        raise Unauthenticated(
            f"the ID token has no {settings.username_claim!r} claim (oidc.username_claim)"
        )
    name = to_label(raw_name, 63 - len(region.user_prefix))
    if not name or name in RESERVED_USER_NAMES:
        raise Forbidden(f"user name {raw_name!r} cannot be used on this platform")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, email=claims.get("email"), password_hash=None, source="oidc")
        session.add(user)
        session.flush()
        project = Project(id=personal_project_id(region, name), name=name, personal_of=user.id)
        project.members.append(Membership(user_id=user.id, role="admin"))
        session.add(project)
    elif user.source != "oidc":
        # a local account of the same name: signing in as it through the provider would hand
        # it to whoever the provider calls by that name
        raise Forbidden(
            f"a local account named {name!r} exists; ask an administrator to link or rename it"
        )
    if user.disabled:
        raise Unauthenticated("this account is disabled; ask an administrator")
    groups = claims.get(settings.groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    groups = [g for g in groups if isinstance(g, str)]
    user.is_admin = any(g in settings.admin_groups for g in groups)
    if email := claims.get("email"):
        user.email = email
    _sync_group_projects(session, user, projects_for_groups(groups, settings), region)
    session.flush()
    return user


def _sync_group_projects(
    session: Session, user: User, names: list[str], region: RegionSettings
) -> None:
    wanted = {f"{region.project_prefix}{n}"[:63] for n in names}
    current = {
        m.project_id: m
        for m in session.scalars(
            select(Membership)
            .join(Project)
            .where(Membership.user_id == user.id, Project.source == "oidc-group")
        )
    }
    for project_id, membership in current.items():
        if project_id not in wanted:
            session.delete(membership)
    for project_id in wanted - set(current):
        project = session.get(Project, project_id)
        if project is None:
            project = Project(id=project_id, name=project_id, source="oidc-group")
            session.add(project)
            session.flush()
        elif project.source != "oidc-group":
            continue  # a local project of the same name is managed by its admins, not groups
        session.add(Membership(project_id=project_id, user_id=user.id, role="member"))
