"""The platform's object storage: the S3 endpoint (embedded SeaweedFS or external), the admin
client that creates buckets, and per-user session credentials.

Bucket layout (Onyxia's per-user bucket mode): each project has a bucket named after its id,
so a user's personal bucket is ``user-alice`` and a shared project's is ``project-sandbox``.
Session credentials come from STS ``AssumeRoleWithWebIdentity`` with a JWT the platform signs
for the user (claims ``bucket`` and ``project_bucket``), or, on an external S3 whose STS trusts
the identity provider (``web_identity: oidc``), with the user's ID token from the provider; on
an external S3 without STS, the configured static credentials are handed out instead
(single-tenant deployments only).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
from botocore.client import BaseClient
from botocore.config import Config

from datalab.config import Settings
from datalab.errors import ConfigError, StorageUnavailable
from datalab.identity.federation import ProviderTokens
from datalab.identity.issuer import AUDIENCE_S3, JwksServer, TokenIssuer
from datalab.storage import botocore_session
from datalab.storage.seaweedfs import ROLE_ARN, EmbeddedSeaweedFS, role_policy

log = logging.getLogger(__name__)

#: longest S3 session the embedded STS grants (AWS's own limit for role sessions)
MAX_SESSION_S = 12 * 3600


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime | None  # None: static credentials

    def to_json(self) -> dict[str, Any]:
        """The shape of an AWS ``credential_process`` answer."""
        data: dict[str, Any] = {
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
        }
        if self.session_token:
            data["SessionToken"] = self.session_token
        if self.expiration is not None:
            data["Expiration"] = self.expiration.astimezone(UTC).isoformat()
        return data


def s3_client(
    endpoint_url: str,
    region: str,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
) -> BaseClient:
    return botocore_session.session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token or None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # no CRC32 of every part and download on top of SigV4's payload hash (which S3
            # checks): the platform's CPU goes to moving bytes; S3-compatible servers that do
            # not know the new checksum headers are not confused by them
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class StorageService:
    def __init__(
        self,
        settings: Settings,
        issuer: TokenIssuer,
        jwks: JwksServer | None = None,
        federation: ProviderTokens | None = None,
    ) -> None:
        self.settings = settings.storage
        self.issuer = issuer
        self.jwks = jwks
        self.federation = federation if self.settings.web_identity == "oidc" else None
        self.embedded: EmbeddedSeaweedFS | None = None
        if self.settings.mode == "embedded":
            self.embedded = EmbeddedSeaweedFS(
                settings.data_dir,
                port=self.settings.port,
                listen_address=str(self.settings.listen_address),
            )
            self.endpoint_url = self.embedded.endpoint_url
            self._admin_key = self.embedded.admin.access_key_id
            self._admin_secret = self.embedded.admin.secret_access_key
            self.role_arn: str | None = ROLE_ARN
        else:
            if not self.settings.endpoint_url or not self.settings.access_key_id:
                raise ConfigError(
                    "storage.mode is 'external' but storage.endpoint_url or "
                    "storage.access_key_id is not set"
                )
            secret = self.settings.secret_access_key
            self.endpoint_url = self.settings.endpoint_url.rstrip("/")
            self._admin_key = self.settings.access_key_id
            self._admin_secret = secret.get_secret_value() if secret else ""
            self.role_arn = self.settings.sts_role_arn
        self.region = self.settings.region
        self._known_buckets: set[str] = set()

    async def start(self) -> None:
        if self.embedded is not None:
            assert self.jwks is not None
            await self.embedded.start(
                issuer_url=self.issuer.issuer_url,
                jwks_url=self.jwks.jwks_url,
                audience=AUDIENCE_S3,
                max_session_s=MAX_SESSION_S,
                policy=role_policy(self.settings.bucket_mode, self.settings.shared_bucket),
            )

    async def stop(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()

    def admin_client(self) -> BaseClient:
        return s3_client(self.endpoint_url, self.region, self._admin_key, self._admin_secret)

    @property
    def public_url(self) -> str:
        """The S3 endpoint users and their browsers reach (``storage.public_url``)."""
        return (self.settings.public_url or self.endpoint_url).rstrip("/")

    def presigned_get(self, bucket: str, key: str, expires_s: int) -> str:
        """A GET link anyone can use until it expires, signed (v4) with the platform's identity.
        The host is part of the signature, so it is signed for the public endpoint: the same
        link rewritten to another address would be refused."""
        client = s3_client(self.public_url, self.region, self._admin_key, self._admin_secret)
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )
        return url

    async def run(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking boto3 call in a thread; S3 unreachable becomes a clear 503."""
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
        ) as exc:
            raise StorageUnavailable(
                f"object storage at {self.endpoint_url} is unavailable ({what}): "
                f"{type(exc).__name__}; try again shortly"
            ) from None

    async def ensure_bucket(self, name: str) -> None:
        if name in self._known_buckets:
            return
        client = self.admin_client()
        try:
            await self.run("create bucket", client.create_bucket, Bucket=name)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StorageUnavailable(f"cannot create bucket {name!r}: {code}") from None
        self._known_buckets.add(name)

    @property
    def prefix_mode(self) -> bool:
        return self.settings.bucket_mode == "prefix"

    def locate(self, space: str, key: str = "") -> tuple[str, str]:
        """Where a project's space (``user-alice``) and a key in it live in S3: a bucket of
        its own, or a prefix of the shared bucket (``bucket_mode: prefix``)."""
        if self.prefix_mode:
            return self.settings.shared_bucket, f"{space}/{key}"
        return space, key

    def space_key(self, space: str, physical_key: str) -> str:
        """The key as the user sees it in their space (inverse of :meth:`locate`)."""
        return physical_key.removeprefix(f"{space}/") if self.prefix_mode else physical_key

    async def session_credentials(
        self, user_name: str, personal_bucket: str, project_bucket: str, ttl_s: int | None = None
    ) -> S3Credentials:
        """Credentials for ``user_name`` on their space and ``project_bucket``'s."""
        if self.prefix_mode:
            await self.ensure_bucket(self.settings.shared_bucket)
            claims = {"prefix": f"{personal_bucket}/", "project_prefix": f"{project_bucket}/"}
        else:
            await self.ensure_bucket(personal_bucket)
            await self.ensure_bucket(project_bucket)
            claims = {"bucket": personal_bucket, "project_bucket": project_bucket}
        if self.role_arn is None:
            return S3Credentials(self._admin_key, self._admin_secret, "", None)
        ttl = ttl_s or self.settings.credentials_ttl_s
        if self.federation is not None:
            # the STS trusts the provider: its policies decide what the user's token reaches
            token = await self.federation.id_token(user_name, "S3")
        else:
            token = self.issuer.issue(
                user_name,
                AUDIENCE_S3,
                ttl_s=300,  # only long enough for the exchange below
                claims={"preferred_username": user_name, **claims},
            )
        return await self.assume_role(token, user_name, ttl)

    async def assume_role(
        self, web_identity_token: str, session_name: str, ttl_s: int
    ) -> S3Credentials:
        sts = botocore_session.session().client(
            "sts",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            # the call is authenticated by the token; botocore insists on signing something
            aws_access_key_id="anonymous",
            aws_secret_access_key="anonymous",  # noqa: S106 - not a secret
            # parameter_validation off: botocore insists on AWS's 900 s minimum duration
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                parameter_validation=False,
            ),
        )
        try:
            answer = await self.run(
                "STS",
                sts.assume_role_with_web_identity,
                RoleArn=self.role_arn,
                RoleSessionName=session_name,
                WebIdentityToken=web_identity_token,
                DurationSeconds=ttl_s,
            )
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageUnavailable(
                f"the S3 STS refused credentials: {error.get('Code', '')} "
                f"{error.get('Message', '')}".strip()
            ) from None
        credentials = answer["Credentials"]
        expiration = credentials.get("Expiration")
        if isinstance(expiration, datetime) and expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        return S3Credentials(
            credentials["AccessKeyId"],
            credentials["SecretAccessKey"],
            credentials["SessionToken"],
            expiration or datetime.now(UTC) + timedelta(seconds=ttl_s),
        )
