"""The platform's secrets store: embedded OpenBao or an external Vault, configured so that each
user's token reaches only their own KV directory and those of their shared projects.

Layout in the KV v2 mount (``secrets.mount``): one top directory per project, named after its
id: ``user-alice/`` (alice's personal project) and ``project-sandbox/`` (a shared project).

How a user gets a token: the platform signs a JWT (audience ``datalab-vault``, ``sub`` = user
name, ``projects`` = the user's shared projects) and logs in with it through Vault's JWT auth,
which trusts the issuer's public key. A user's token (role ``datalab-user``) carries:
- the templated policy ``datalab-user``: ``<mount>/data/<user_prefix><alias name>/*``, where
  the entity alias name is the token's ``sub``;
- the policies of the external identity groups named after the ``projects`` claim
  (``datalab-project-<id>``: ``<mount>/data/<id>/*``), which the platform creates beforehand.
Tokens are renewable (``token_max_ttl`` 24 h), so long-running services can extend them.

Every token minted for a user is recorded by its accessor (:class:`datalab.db.VaultTokenRecord`)
until it cannot live any longer: disabling the user revokes them all
(:meth:`SecretsService.revoke_tokens_of`), and no token is minted for a disabled user.

A service in a shared project gets a *project* token instead (role ``datalab-project``, no user
policy): that project's directory only. Members the service is shared with may run code in it,
so it must not hold its owner's personal secrets nor those of their other projects.

An external Vault whose JWT auth trusts the identity provider instead (``web_identity: oidc``):
users log in at ``oidc_auth_mount`` with role ``oidc_role`` and their ID token from the
provider; that role and its policies are the Vault admins' (docs/secrets.md shows them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from datalab.config import Settings
from datalab.db import Database, User, VaultTokenRecord
from datalab.errors import ConfigError, NotFound, SecretsUnavailable, Unauthenticated
from datalab.identity.federation import ProviderTokens
from datalab.identity.issuer import AUDIENCE_VAULT, TokenIssuer
from datalab.secrets.openbao import EmbeddedOpenBao
from datalab.secrets.vault import VaultClient

log = logging.getLogger(__name__)

AUTH_MOUNT = "datalab-jwt"
ROLE = "datalab-user"
PROJECT_ROLE = "datalab-project"
USER_POLICY = "datalab-user"
MAX_TOKEN_TTL_S = 24 * 3600
#: how long a token from an external Vault may live, renewals included, for all the platform
#: knows (its roles are that Vault's admins'): Vault's default maximum, 32 days
EXTERNAL_MAX_TOKEN_TTL_S = 768 * 3600


@dataclass(frozen=True)
class VaultToken:
    token: str
    ttl_s: int
    accessor: str = ""


def project_policy_name(project_id: str) -> str:
    return f"datalab-project-{project_id}"


class SecretsService:
    def __init__(
        self,
        settings: Settings,
        issuer: TokenIssuer,
        db: Database,
        federation: ProviderTokens | None = None,
    ) -> None:
        self.settings = settings.secrets
        self.db = db
        self.user_prefix = settings.region.user_prefix
        self.issuer = issuer
        self.federation = federation if self.settings.web_identity == "oidc" else None
        self.mount = self.settings.mount
        self.embedded: EmbeddedOpenBao | None = None
        if self.settings.mode == "embedded":
            self.embedded = EmbeddedOpenBao(
                settings.data_dir,
                port=self.settings.port,
                listen_address=str(self.settings.listen_address),
            )
            self.address = self.embedded.address
        else:
            if not self.settings.address or self.settings.token is None:
                raise ConfigError(
                    "secrets.mode is 'external' but secrets.address or secrets.token is not set"
                )
            self.address = self.settings.address.rstrip("/")
        self.admin: VaultClient | None = None
        self._users: VaultClient | None = None
        self._accessor = ""
        self._known_projects: set[str] = set()

    async def start(self) -> None:
        if self.embedded is not None:
            await self.embedded.start()
            token = self.embedded.root_token
        else:
            assert self.settings.token is not None
            token = self.settings.token.get_secret_value()
        self.admin = VaultClient(self.address, token)
        self._users = VaultClient(self.address)  # requests made with users' own tokens
        await self.configure()
        await self._revoke_tokens_of_disabled_users()

    async def stop(self) -> None:
        for client in (self.admin, self._users):
            if client is not None:
                await client.aclose()
        self.admin = self._users = None
        if self.embedded is not None:
            await self.embedded.stop()

    def user_client(self) -> VaultClient:
        """The client for requests authenticated by a user's token (passed per request)."""
        if self._users is None:
            raise SecretsUnavailable("the secrets store is not started")
        return self._users

    def _client(self) -> VaultClient:
        assert self.admin is not None, "SecretsService.start() first"
        return self.admin

    async def configure(self) -> None:
        """Idempotent: KV v2 mount, JWT auth trusting the issuer, the user role and policy."""
        client = self._client()
        mounts = await client.request("GET", "sys/mounts")
        assert mounts is not None
        mounts = mounts.get("data", mounts)
        if f"{self.mount}/" not in mounts:
            await client.request(
                "POST", f"sys/mounts/{self.mount}", json={"type": "kv", "options": {"version": "2"}}
            )
        auths = await client.request("GET", "sys/auth")
        assert auths is not None
        auths = auths.get("data", auths)
        if f"{AUTH_MOUNT}/" not in auths:
            await client.request("POST", f"sys/auth/{AUTH_MOUNT}", json={"type": "jwt"})
            auths = await client.request("GET", "sys/auth")
            assert auths is not None
            auths = auths.get("data", auths)
        self._accessor = auths[f"{AUTH_MOUNT}/"]["accessor"]
        await client.request(
            "POST",
            f"auth/{AUTH_MOUNT}/config",
            json={
                # the public key itself, not a JWKS URL: no network dependency on the platform
                "jwt_validation_pubkeys": [self.issuer.public_key_pem()],
                "bound_issuer": self.issuer.issuer_url,
            },
        )
        alias_name = f"{{{{identity.entity.aliases.{self._accessor}.name}}}}"
        top = f"{self.user_prefix}{alias_name}"
        await client.request(
            "PUT",
            f"sys/policies/acl/{USER_POLICY}",
            json={"policy": self._kv_policy(top)},
        )
        for role, policies in ((ROLE, [USER_POLICY]), (PROJECT_ROLE, [])):
            await client.request(
                "POST",
                f"auth/{AUTH_MOUNT}/role/{role}",
                json={
                    "role_type": "jwt",
                    "user_claim": "sub",
                    "groups_claim": "projects",
                    "bound_audiences": [AUDIENCE_VAULT],
                    "token_policies": policies,
                    "token_ttl": self.settings.token_ttl_s,
                    "token_max_ttl": MAX_TOKEN_TTL_S,
                    "token_type": "service",
                },
            )
        self._known_projects.clear()

    def _kv_policy(self, top: str) -> str:
        return (
            f'path "{self.mount}/data/{top}/*" {{ capabilities = '
            '["create", "read", "update", "delete", "list"] }\n'
            f'path "{self.mount}/metadata/{top}/*" {{ capabilities = '
            '["read", "list", "delete"] }\n'
            f'path "{self.mount}/metadata/{top}" {{ capabilities = ["read", "list"] }}\n'
        )

    async def ensure_project(self, project_id: str) -> None:
        """The external group (and its policy) through which members reach a project's KV."""
        if project_id in self._known_projects:
            return
        client = self._client()
        policy = project_policy_name(project_id)
        await client.request(
            "PUT", f"sys/policies/acl/{policy}", json={"policy": self._kv_policy(project_id)}
        )
        group = await client.request(
            "POST",
            f"identity/group/name/{policy}",
            json={"type": "external", "policies": [policy]},
        )
        if group is None:  # updated in place: look it up for its id
            group = await client.request("GET", f"identity/group/name/{policy}")
        assert group is not None
        group_id = group["data"]["id"]
        aliases = group["data"].get("alias") or {}
        if not aliases.get("name"):
            await client.request(
                "POST",
                "identity/group-alias",
                json={
                    "name": project_id,
                    "mount_accessor": self._accessor,
                    "canonical_id": group_id,
                },
            )
        self._known_projects.add(project_id)

    async def user_token(self, user_name: str, shared_projects: list[str]) -> VaultToken:
        """A Vault token for ``user_name``: their KV directory and their shared projects'."""
        if self.federation is not None:
            # the Vault trusts the provider: its admins' role and policies decide what the
            # token reaches (projects through external groups named after the groups claim)
            self._check_enabled(user_name)
            id_token = await self.federation.id_token(user_name, "Vault")
            mount, role = self.settings.oidc_auth_mount, self.settings.oidc_role
            minted = await self._client().login_jwt(mount, role, id_token)
            return await self._recorded(user_name, minted, EXTERNAL_MAX_TOKEN_TTL_S)
        return await self._login(user_name, ROLE, shared_projects)

    async def project_token(self, user_name: str, project_id: str) -> VaultToken:
        """A Vault token for ``user_name`` that reaches ``project_id``'s directory only (for
        services in a shared project, which members may use)."""
        if self.federation is not None:  # the provider's policies decide; see docs/secrets.md
            return await self.user_token(user_name, [project_id])
        return await self._login(user_name, PROJECT_ROLE, [project_id])

    async def _login(self, user_name: str, role: str, projects: list[str]) -> VaultToken:
        self._check_enabled(user_name)
        for project_id in projects:
            await self.ensure_project(project_id)
        jwt = self.issuer.issue(
            user_name,
            AUDIENCE_VAULT,
            ttl_s=120,  # only long enough for the login below
            claims={"preferred_username": user_name, "projects": sorted(projects)},
        )
        minted = await self._client().login_jwt(AUTH_MOUNT, role, jwt)
        return await self._recorded(user_name, minted, MAX_TOKEN_TTL_S)

    # -- the tokens minted for users -------------------------------------------------------------

    def _check_enabled(self, user_name: str) -> None:
        with self.db.session() as session:
            disabled = session.scalar(select(User.disabled).where(User.name == user_name))
        if disabled is None:
            raise NotFound(f"no user named {user_name!r}")
        if disabled:
            raise Unauthenticated(f"no Vault token for {user_name!r}: the account is disabled")

    async def _recorded(
        self, user_name: str, minted: tuple[str, str, int], max_ttl_s: int
    ) -> VaultToken:
        """Record a token just minted for ``user_name`` (and forget the records of tokens that
        have expired by now). Had the user been disabled meanwhile, after the revocation
        looked for their tokens, the token is revoked at once."""
        token, accessor, ttl = minted
        now = datetime.now(UTC)
        with self.db.session() as session:
            session.execute(delete(VaultTokenRecord).where(VaultTokenRecord.expires_at <= now))
            user_id = session.scalar(select(User.id).where(User.name == user_name))
            if user_id is not None:
                session.add(
                    VaultTokenRecord(
                        accessor=accessor,
                        user_id=user_id,
                        created_at=now,
                        expires_at=now + timedelta(seconds=max_ttl_s),
                    )
                )
        try:  # read after the record is committed: a revocation either saw it or comes after
            self._check_enabled(user_name)
        except Unauthenticated:
            await self.revoke_tokens_of(user_name)
            raise
        return VaultToken(token, ttl, accessor)

    async def revoke_tokens_of(self, user_name: str) -> int:
        """Revoke every token minted for ``user_name`` that may still be alive; how many."""
        with self.db.session() as session:
            accessors = list(
                session.scalars(
                    select(VaultTokenRecord.accessor)
                    .join(User, VaultTokenRecord.user_id == User.id)
                    .where(User.name == user_name)
                )
            )
        client = self._client()
        for accessor in accessors:
            await client.revoke_accessor(accessor)
            with self.db.session() as session:
                session.execute(
                    delete(VaultTokenRecord).where(VaultTokenRecord.accessor == accessor)
                )
        if accessors:
            log.info("revoked %d Vault token(s) of %s", len(accessors), user_name)
        return len(accessors)

    async def _revoke_tokens_of_disabled_users(self) -> None:
        """Tokens of users disabled while this Vault could not be reached (a disabling that
        failed half-way is finished here, at the next start)."""
        with self.db.session() as session:
            names = list(
                session.scalars(
                    select(User.name)
                    .join(VaultTokenRecord, VaultTokenRecord.user_id == User.id)
                    .where(User.disabled.is_(True))
                    .distinct()
                )
            )
        for name in names:
            await self.revoke_tokens_of(name)
