"""What every launch injects through the x-onyxia context: S3 session credentials for the
user's bucket and the project's bucket, and a Vault token for the user's and their projects'
secret directories. Both are minted per launch from the real STS / Vault JWT flows.

Refresh: S3 session credentials expire (``storage.credentials_ttl_s``), so each launch also
gets a *credentials refresh token*: a JWT for the audience ``datalab-credentials`` naming the
user, the project and the service. The service gives it to the AWS SDKs' standard container
credentials provider (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` =
``<platform>/api/storage/credentials/refresh`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` =
``Bearer <token>``), which boto3, s3fs, the AWS CLI and the other SDKs call again before the
credentials expire. The platform answers only while the user may still use the project and the
service still exists, so deleting a service or removing a member ends its S3 access at the next
refresh. Vault tokens are renewable by their holder (``auth/token/renew-self``) up to 24 h.

A service in a shared project may be shared with the project's members, who can then run code
in it: its credentials (S3 session, Vault token) reach that project's bucket and secrets only,
never its owner's personal space nor their other projects. A service in a personal project
(which cannot be shared) reaches its owner's space and the project's, like the owner.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

from datalab.backends.base import PlatformEndpoint
from datalab.config import Settings
from datalab.db import Database, Service
from datalab.errors import InvalidToken, Unauthenticated
from datalab.identity import accounts
from datalab.identity.access import principal_for, service_credential_stands
from datalab.identity.issuer import AUDIENCE_CREDENTIALS, AUDIENCE_SERVICE, TokenIssuer
from datalab.onyxia_context import S3Context, VaultContext
from datalab.secrets.service import SecretsService
from datalab.secrets.store import SecretStore
from datalab.storage.objects import ObjectStore
from datalab.storage.service import S3Credentials, StorageService


@dataclass(frozen=True)
class Injection:
    s3: S3Context | None = None
    vault: VaultContext | None = None
    s3_credentials: S3Credentials | None = None

    @property
    def refresh_url(self) -> str:
        """The platform's container-credentials endpoint ("" without a service)."""
        return self.s3.credentials_url if self.s3 else ""

    @property
    def refresh_token(self) -> str:
        """The service's credentials refresh token ("" without a service)."""
        return self.s3.credentials_authorization.removeprefix("Bearer ") if self.s3 else ""


#: what a dry run shows in place of each credential: previews mint nothing
MINTED_AT_LAUNCH = "<minted at launch>"
#: lifetime of a service's credentials refresh token (it also dies with the service)
REFRESH_TOKEN_TTL_S = 90 * 24 * 3600
REFRESH_PATH = "/api/storage/credentials/refresh"


class CredentialBroker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        issuer: TokenIssuer,
        storage: StorageService | None,
        secret_store: SecretsService | None,
        reachable_url: Callable[[PlatformEndpoint, str], str] = lambda _, url: url,
    ) -> None:
        """``reachable_url(endpoint, url)``: where services reach one of the platform's
        endpoints (the backend's :meth:`~datalab.backends.base.Backend.reachable_url`)."""
        self.settings = settings
        self.db = db
        self.issuer = issuer
        self.storage = storage
        self.secret_store = secret_store
        self.reachable_url = reachable_url

    def service_addresses(self) -> dict[PlatformEndpoint, str]:
        """The addresses injected into services, for the endpoints in use: checked when the
        platform starts (a backend that cannot give one raises ConfigError then)."""
        addresses: dict[PlatformEndpoint, str] = {}
        if self.storage is not None:
            addresses["s3"] = self.reachable_url("s3", self.storage.endpoint_url)
            addresses["platform"] = self.reachable_url("platform", self.settings.server.url())
        if self.secret_store is not None:
            addresses["vault"] = self.reachable_url("vault", self.secret_store.address)
        return addresses

    @property
    def _refresh_url(self) -> str:
        return self.reachable_url("platform", self.settings.server.url()) + REFRESH_PATH

    def _user_projects(self, user_name: str) -> tuple[str, list[str]]:
        """The user's personal project id and the ids of their shared projects."""
        with self.db.session() as session:
            user = accounts.get_user(session, user_name)
            projects = accounts.list_projects(session, user)
            shared = [p.id for p in projects if p.personal_of is None]
        return accounts.personal_project_id(self.settings.region, user_name), shared

    def personal_project(self, user_name: str) -> str:
        return accounts.personal_project_id(self.settings.region, user_name)

    @functools.cached_property
    def objects(self) -> ObjectStore:
        """The storage API's operations, with the callers' own session credentials."""
        assert self.storage is not None
        return ObjectStore(self.storage, self.s3_credentials, self.personal_project)

    @functools.cached_property
    def secrets(self) -> SecretStore:
        """The secrets API's operations, with the callers' own Vault tokens."""
        assert self.secret_store is not None
        return SecretStore(
            self.secret_store, self.personal_project, lambda name: self._user_projects(name)[1]
        )

    async def s3_credentials(self, user_name: str, project_id: str) -> S3Credentials:
        """The user's own S3 session in a project: their space and the project's."""
        assert self.storage is not None
        personal, _ = self._user_projects(user_name)
        return await self.storage.session_credentials(user_name, personal, project_id)

    async def service_s3_credentials(self, user_name: str, project_id: str) -> S3Credentials:
        """The S3 session of a service of ``user_name`` in ``project_id``: the user's own in
        their personal project, the project's space only in a shared one."""
        assert self.storage is not None
        if project_id == self.personal_project(user_name):
            return await self.s3_credentials(user_name, project_id)
        return await self.storage.session_credentials(user_name, project_id, project_id)

    def preview(self, project_id: str, *, placeholders: bool = False) -> Injection:
        """What a launch in ``project_id`` injects, without minting credentials: for forms and
        schema views, where the S3 and Vault sections must show as enabled. With
        ``placeholders`` (dry runs: what a launch would give, shown to its user), every
        credential is :data:`MINTED_AT_LAUNCH` instead of empty."""
        s3 = vault = None
        stand_in = MINTED_AT_LAUNCH if placeholders else ""
        if self.storage is not None:
            bucket, prefix = self.storage.locate(project_id)  # prefix: "" in bucket mode
            s3 = S3Context(
                endpoint_url=self.reachable_url("s3", self.storage.endpoint_url),
                region=self.storage.region,
                bucket=bucket,
                object_name_prefix=prefix,
                path_style_access=True,
                access_key_id=stand_in,
                secret_access_key=stand_in,
                session_token=stand_in,
                credentials_url=self._refresh_url if placeholders else "",
                credentials_authorization=stand_in,
            )
        if self.secret_store is not None:
            vault = VaultContext(
                address=self.reachable_url("vault", self.secret_store.address),
                mount=self.secret_store.mount,
                top_dir=project_id,
                token=stand_in,
            )
        return Injection(s3=s3, vault=vault)

    async def for_launch(
        self, user_name: str, project_id: str, service_id: str | None = None
    ) -> Injection:
        """The preview with credentials minted for ``user_name`` (and, for a service, the
        refresh endpoint and token that renew its S3 session)."""
        injection = self.preview(project_id)
        personal, shared = self._user_projects(user_name)
        s3, vault, credentials = injection.s3, injection.vault, None
        if s3 is not None:
            credentials = await self.service_s3_credentials(user_name, project_id)
            refresh_url = authorization = ""
            if service_id is not None:
                refresh_url = self._refresh_url
                refresh_token = self.issuer.issue(
                    user_name,
                    AUDIENCE_CREDENTIALS,
                    REFRESH_TOKEN_TTL_S,
                    {"project": project_id, "service": service_id},
                )
                authorization = f"Bearer {refresh_token}"
            s3 = dataclasses.replace(
                s3,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
                credentials_url=refresh_url,
                credentials_authorization=authorization,
            )
        if vault is not None:
            assert self.secret_store is not None
            if project_id == personal:
                token = await self.secret_store.user_token(user_name, shared)
            else:
                token = await self.secret_store.project_token(user_name, project_id)
            vault = dataclasses.replace(vault, token=token.token)
        return Injection(s3=s3, vault=vault, s3_credentials=credentials)

    def service_token(self, user_name: str, project_id: str, service_id: str) -> str:
        """A service's identity (:attr:`datalab.backends.base.ServiceSpec.token`): with it as a
        bearer, the service reaches the other services of its project through the platform
        (:mod:`datalab.gateway`), as long as its owner may and it exists. Made anew at each
        start; it lives as long as a refresh token."""
        return self.issuer.issue(
            user_name,
            AUDIENCE_SERVICE,
            REFRESH_TOKEN_TTL_S,
            {"project": project_id, "service": service_id},
        )

    async def refresh(self, refresh_token: str) -> S3Credentials:
        """New S3 credentials for the service a refresh token was issued to, if its user may
        still use the project and the service still exists."""
        try:
            claims = self.issuer.verify(refresh_token, AUDIENCE_CREDENTIALS)
        except InvalidToken as exc:
            raise Unauthenticated(f"credentials refresh refused: {exc}") from None
        user_name, project_id = str(claims["sub"]), str(claims.get("project", ""))
        with self.db.session() as session:
            user = accounts.get_user(session, user_name)
            if user.disabled:
                raise Unauthenticated("credentials refresh refused: the account is disabled")
            principal_for(session, user, project_id, "refresh")  # still a member?
            service = session.get(Service, str(claims.get("service", "")))
            if not service_credential_stands(user, service, project_id):
                raise Unauthenticated("credentials refresh refused: the service no longer exists")
        return await self.service_s3_credentials(user_name, project_id)
