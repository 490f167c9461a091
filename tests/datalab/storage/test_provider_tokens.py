"""S3 and Vault that trust the identity provider, not the platform (``web_identity: oidc``), as
MinIO and Vault trust Keycloak in Onyxia's deployments: the platform hands them the user's ID
token from the provider. Everything is real and run by the test on loopback: the OIDC provider
(PyPI oidc-provider-mock), a SeaweedFS whose STS trusts only the provider, and an OpenBao whose
JWT auth trusts only the provider, both configured here as their admins would."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from datalab.config import RegionSettings, load_settings
from datalab.db import Database, ProviderToken, User
from datalab.identity import accounts
from datalab.identity.federation import ProviderTokens
from datalab.identity.issuer import AUDIENCE_S3
from datalab.identity.oidc import ProviderTokenSet
from datalab.platform import Platform
from datalab.secrets.openbao import EmbeddedOpenBao
from datalab.secrets.vault import VaultClient
from datalab.storage.seaweedfs import ROLE_ARN, EmbeddedSeaweedFS
from datalab.storage.service import s3_client

from ..conftest import Api, oidc_sign_in
from .conftest import start_federated

pytestmark = pytest.mark.anyio

CLIENT_ID = "datalab"
KV = "onyxia-kv"


def sign_in_settings(provider: str) -> dict[str, Any]:
    return {"enabled": True, "issuer_url": provider, "client_id": CLIENT_ID, "client_secret": "x"}


def user_bucket_policy() -> dict[str, Any]:
    """What an S3 admin trusting the provider writes: each user their own bucket, named after
    the provider's user name claim."""
    bucket = "arn:aws:s3:::user-${jwt:preferred_username}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:*"], "Resource": [bucket, f"{bucket}/*"]},
            {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]},
        ],
    }


@pytest.fixture(scope="module")
async def provider_s3(
    provider: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EmbeddedSeaweedFS]:
    async with httpx.AsyncClient() as http:
        discovery = await http.get(f"{provider}/.well-known/openid-configuration")
    jwks_uri = discovery.json()["jwks_uri"]
    s3 = EmbeddedSeaweedFS(tmp_path_factory.mktemp("provider-s3"))
    await s3.start(
        issuer_url=provider,
        jwks_url=jwks_uri,
        audience=CLIENT_ID,
        max_session_s=3600,
        policy=user_bucket_policy(),
    )
    yield s3
    await s3.stop()


@pytest.fixture(scope="module")
async def provider_vault(
    provider: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[EmbeddedOpenBao]:
    """An OpenBao configured by its admins: JWT auth at ``jwt`` trusting the provider, role
    ``onyxia-user``, each user their own ``user-<name>`` directory (Onyxia's Vault setup)."""
    vault = EmbeddedOpenBao(tmp_path_factory.mktemp("provider-vault"))
    await vault.start()
    # generous timeout: configuring JWT auth fetches the provider's discovery document
    admin = VaultClient(vault.address, vault.root_token, timeout_s=60)
    try:
        await admin.request(
            "POST", f"sys/mounts/{KV}", json={"type": "kv", "options": {"version": "2"}}
        )
        await admin.request("POST", "sys/auth/jwt", json={"type": "jwt"})
        mounts = await admin.request("GET", "sys/auth")
        assert mounts is not None  # a GET answers with a body
        accessor = mounts["jwt/"]["accessor"]
        await admin.request(
            "POST",
            "auth/jwt/config",
            json={"oidc_discovery_url": provider, "bound_issuer": provider},
        )
        top = f"user-{{{{identity.entity.aliases.{accessor}.name}}}}"
        everything = '["create", "read", "update", "delete", "list"]'
        policy = f'path "{KV}/data/{top}/*" {{ capabilities = {everything} }}\n'
        policy += f'path "{KV}/metadata/{top}/*" {{ capabilities = ["read", "list", "delete"] }}\n'
        await admin.request("PUT", "sys/policies/acl/onyxia-user", json={"policy": policy})
        await admin.request(
            "POST",
            "auth/jwt/role/onyxia-user",
            json={
                "role_type": "jwt",
                "user_claim": "preferred_username",
                "bound_audiences": [CLIENT_ID],
                "token_policies": ["onyxia-user"],
                "token_ttl": 600,
            },
        )
    finally:
        await admin.aclose()
    yield vault
    await vault.stop()


@dataclass
class Deployment:
    platform: Platform
    http: httpx.AsyncClient
    provider: str
    s3: EmbeddedSeaweedFS

    async def signed_in_api(self, name: str) -> Api:
        """``name`` signs in once through the provider in a browser; an API token for the CLI."""
        self.http.cookies.clear()
        claims = {"preferred_username": name, "email": f"{name}@example.org"}
        await oidc_sign_in(self.http, self.provider, f"{name}-sub", claims)
        self.http.cookies.clear()
        return self.api(name)

    def api(self, name: str) -> Api:
        with self.platform.db.session() as session:
            _, token = accounts.create_token(
                session, accounts.get_user(session, name), "cli", ttl_days=1
            )
        return Api(self.http, name, token)


@pytest.fixture(scope="module")
async def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    provider: str,
    provider_s3: EmbeddedSeaweedFS,
    provider_vault: EmbeddedOpenBao,
) -> AsyncIterator[Deployment]:
    settings = load_settings(
        None,
        data_dir=tmp_path_factory.mktemp("platform") / "data",
        backend={"name": "memory"},
        storage={
            "mode": "external",
            "endpoint_url": provider_s3.endpoint_url,
            "access_key_id": provider_s3.admin.access_key_id,
            "secret_access_key": provider_s3.admin.secret_access_key,
            "sts_role_arn": ROLE_ARN,
            "web_identity": "oidc",
        },
        secrets={
            "mode": "external",
            "address": provider_vault.address,
            "token": provider_vault.root_token,
            "web_identity": "oidc",
        },
        oidc=sign_in_settings(provider),
    )
    platform, http = await start_federated(settings)
    try:
        yield Deployment(platform, http, provider, provider_s3)
    finally:
        await http.aclose()
        await platform.stop()


async def test_storage_secrets_and_launches_use_the_provider_tokens(
    deployment: Deployment,
) -> None:
    alice = await deployment.signed_in_api("alice")
    # the storage API: S3 session credentials from the STS that trusts only the provider
    await alice.call("PUT", "/api/storage/buckets/user-alice/objects/notes.txt", content=b"hello")
    listing = await alice.call("GET", "/api/storage/buckets/user-alice/objects")
    assert [o["key"] for o in listing["objects"]] == ["notes.txt"]
    # the secrets API: a Vault token from the JWT auth that trusts only the provider
    await alice.call(
        "PUT", "/api/secrets/values/user-alice/db", json={"data": {"PGPASSWORD": "pw"}}
    )
    secret = await alice.call("GET", "/api/secrets/values/user-alice/db")
    assert secret["data"] == {"PGPASSWORD": "pw"}
    # a launch: the injected credentials are the provider-federated ones, scoped by the S3
    # and Vault admins' policies to alice's own bucket and directory
    launched = await alice.call(
        "POST", "/api/services", json={"chart": "jupyter-python", "name": "nb"}
    )
    values = (await alice.call("GET", f"/api/services/{launched['id']}"))["values"]
    s3 = deployment.platform.storage
    assert s3 is not None
    client = s3_client(
        s3.endpoint_url,
        s3.region,
        values["s3"]["accessKeyId"],
        values["s3"]["secretAccessKey"],
        values["s3"]["sessionToken"],
    )
    assert client.get_object(Bucket="user-alice", Key="notes.txt")["Body"].read() == b"hello"
    await s3.ensure_bucket("user-bob")
    with pytest.raises(botocore.exceptions.ClientError):
        client.list_objects_v2(Bucket="user-bob")
    assert deployment.platform.secret_store is not None
    vault = VaultClient(deployment.platform.secret_store.address, values["vault"]["token"])
    try:
        read = await vault.request("GET", f"{KV}/data/user-alice/db")
        assert read is not None and read["data"]["data"] == {"PGPASSWORD": "pw"}
        with pytest.raises(Exception, match="permission denied"):
            await vault.request("PUT", f"{KV}/data/user-bob/x", json={"data": {"A": "1"}})
    finally:
        await vault.aclose()
    await alice.call("DELETE", f"/api/services/{launched['id']}")


async def test_the_servers_trust_only_the_provider(deployment: Deployment) -> None:
    """The platform's own tokens are refused: the credentials above can only have come from
    the provider's tokens."""
    platform = deployment.platform
    assert platform.storage is not None and platform.issuer is not None
    own = platform.issuer.issue(
        "alice", AUDIENCE_S3, 300, {"preferred_username": "alice", "bucket": "user-alice"}
    )
    with pytest.raises(Exception, match="STS refused"):
        await platform.storage.assume_role(own, "alice", 900)


async def test_without_a_valid_provider_sign_in_users_are_told_to_sign_in(
    deployment: Deployment,
) -> None:
    # a local account never signed in with the provider
    local = deployment.api("admin")
    refused = await local.http.get("/api/storage/credentials", headers=local.headers())
    assert refused.status_code == 401, refused.text
    error = refused.json()["error"]
    assert error["code"] == "provider_sign_in_required"
    assert "sign in with the identity provider" in error["message"]
    # carol signed in, then her ID token expired: the provider renews sign-ins without a new
    # ID token (oidc-provider-mock only renews access tokens), so she must sign in again
    carol = await deployment.signed_in_api("carol")
    await carol.call("GET", "/api/storage/buckets/user-carol/objects")
    with deployment.platform.db.session() as session:
        user = accounts.get_user(session, "carol")
        row = session.get(ProviderToken, user.id)
        assert row is not None and row.refresh_token
        row.id_token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    refused = await carol.http.post(
        "/api/services",
        headers=carol.headers(),
        json={"chart": "jupyter-python", "name": "nb-late"},
    )
    assert refused.status_code == 401, refused.text
    message = refused.json()["error"]["message"]
    assert "sign in again" in message and "without an ID token" in message
    with deployment.platform.db.session() as session:
        user = session.get_one(User, user.id)
        assert user is not None
        row = session.get(ProviderToken, user.id)
        assert row is not None
        assert row.refresh_token is None
    # signing in again makes it work again
    await deployment.signed_in_api("carol")
    await carol.call("GET", "/api/storage/buckets/user-carol/objects")


async def test_tokens_are_kept_only_when_servers_take_them(tmp_path: Path, provider: str) -> None:
    """Without ``web_identity: oidc`` the provider's tokens are not stored at all."""
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        backend={"name": "memory"},
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
        oidc=sign_in_settings(provider),
    )
    platform, http = await start_federated(settings)
    try:
        assert platform.federation is None
        await oidc_sign_in(http, provider, "dora-sub", {"preferred_username": "dora"})
        with platform.db.session() as session:
            assert session.query(ProviderToken).count() == 0
    finally:
        await http.aclose()
        await platform.stop()


async def test_an_expiring_id_token_is_renewed_and_the_refresh_token_rotated(
    tmp_path: Path,
) -> None:
    """Providers such as Keycloak renew the ID token with the refresh token (the test provider
    does not: a stand-in for its token endpoint here; the refused case is tested above)."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    db.migrate()
    with db.session() as session:
        user, _ = accounts.create_user(session, RegionSettings(), "erin", password=None)
        user_id = user.id
    now = time.time()

    class Provider:
        calls: list[str] = []

        async def refresh(self, refresh_token: str) -> ProviderTokenSet:
            self.calls.append(refresh_token)
            return ProviderTokenSet({"exp": now + 300}, "id-token-2", "refresh-2")

    provider = Provider()
    tokens = ProviderTokens(db, provider)
    tokens.save(user_id, ProviderTokenSet({"exp": now + 10}, "id-token-1", "refresh-1"))
    assert await tokens.id_token("erin", "S3") == "id-token-2"  # 10 s < margin
    assert provider.calls == ["refresh-1"]
    assert await tokens.id_token("erin", "S3") == "id-token-2"  # still valid
    assert provider.calls == ["refresh-1"]
    with db.session() as session:
        row = session.get(ProviderToken, user_id)
        assert row is not None and row.refresh_token == "refresh-2"
    db.dispose()


async def test_disabling_a_user_revokes_the_provider_federated_vault_tokens(
    deployment: Deployment,
) -> None:
    """With a Vault that trusts the provider, the platform still records the tokens it gets for
    a user and revokes them, with its own Vault token, when the user is disabled."""
    dave = await deployment.signed_in_api("dave")
    store = deployment.platform.secret_store
    assert store is not None
    tools = (await dave.call("POST", "/api/secrets/token"))["token"]
    await dave.call("POST", "/api/services", json={"chart": "jupyter-python", "name": "dave-nb"})
    held = (await dave.call("GET", "/api/services/dave-nb"))["values"]["vault"]["token"]
    admin = deployment.api("admin")
    await admin.call("POST", "/api/users/dave/disable")
    async with httpx.AsyncClient(base_url=store.address) as vault:
        for token in (tools, held):
            headers = {"X-Vault-Token": token}
            looked_up = await vault.get("/v1/auth/token/lookup-self", headers=headers)
            assert looked_up.status_code == 403, looked_up.text
            renewed = await vault.post("/v1/auth/token/renew-self", headers=headers)
            assert renewed.status_code == 403, renewed.text
    with deployment.platform.db.session() as session:
        assert session.get(ProviderToken, accounts.get_user(session, "dave").id) is None
    services = await admin.call("GET", "/api/admin/services", params={"owner": "dave"})
    assert [s["phase"] for s in services["services"]] == ["suspended"]
