"""What every launch injects through the x-onyxia context: S3 session credentials for the
user's bucket and the project's bucket, and a Vault token for the user's and their projects'
secret directories. Both are minted per launch from the real STS / Vault JWT flows."""

from __future__ import annotations

from dataclasses import dataclass

from datalab.config import Settings
from datalab.context import S3Context, VaultContext
from datalab.db import Database
from datalab.identity import accounts
from datalab.secrets.service import SecretsService
from datalab.storage.service import S3Credentials, StorageService


@dataclass(frozen=True)
class Injection:
    s3: S3Context | None = None
    vault: VaultContext | None = None
    s3_credentials: S3Credentials | None = None


class CredentialBroker:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        storage: StorageService | None,
        secret_store: SecretsService | None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.secret_store = secret_store

    def _user_projects(self, user_name: str) -> tuple[str, list[str]]:
        """The user's personal project id and the ids of their shared projects."""
        with self.db.session() as session:
            user = accounts.get_user(session, user_name)
            projects = accounts.list_projects(session, user)
            shared = [p.id for p in projects if p.personal_of is None]
        return accounts.personal_project_id(self.settings.region, user_name), shared

    async def s3_credentials(self, user_name: str, project_id: str) -> S3Credentials:
        assert self.storage is not None
        personal, _ = self._user_projects(user_name)
        return await self.storage.session_credentials(user_name, personal, project_id)

    async def for_launch(self, user_name: str, project_id: str) -> Injection:
        personal, shared = self._user_projects(user_name)
        s3 = vault = credentials = None
        if self.storage is not None:
            credentials = await self.storage.session_credentials(user_name, personal, project_id)
            s3 = S3Context(
                endpoint_url=self.storage.endpoint_url,
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
                region=self.storage.region,
                bucket=project_id,
                path_style_access=True,
            )
        if self.secret_store is not None:
            token = await self.secret_store.user_token(user_name, shared)
            vault = VaultContext(
                address=self.secret_store.address,
                token=token.token,
                mount=self.secret_store.mount,
                top_dir=project_id,
            )
        return Injection(s3=s3, vault=vault, s3_credentials=credentials)
