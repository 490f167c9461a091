"""Sharing a service in a project shares access to it, never its owner's credentials: members
do not see them, and what the service holds (which a member running code in it could read)
reaches the project's data only."""

from __future__ import annotations

import json

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from datalab.db import Service
from datalab.errors import DatalabError
from datalab.secrets.vault import VaultClient

from .conftest import PRIVATE, TEAM, Ledger, Tenancy, launch, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]

GIT_TOKEN = "ghp_alicesGitTokenNeverShared123"


def _secret_strings(values: dict[str, object]) -> list[str]:
    s3, vault = values["s3"], values["vault"]
    assert isinstance(s3, dict) and isinstance(vault, dict)
    found = [
        s3["secretAccessKey"],
        s3["sessionToken"],
        s3["credentialsAuthorization"],
        vault["token"],
        GIT_TOKEN,
    ]
    return [str(v) for v in found if v]


async def test_members_never_see_the_owners_credentials(tenancy: Tenancy, ledger: Ledger) -> None:
    alice, bob = tenancy.users["alice"], tenancy.users["bob"]
    await alice.call("PATCH", "/api/me", json={"git_token": GIT_TOKEN})
    await launch(alice, "jupyter-python", "team-nb", project=TEAM, shared=True)
    owner_view = await alice.call("GET", "/api/services/team-nb", project=TEAM)
    secrets = _secret_strings(owner_view["values"])
    assert len(secrets) == 5  # the owner sees every one

    for path in ("/api/services/team-nb", "/api/services", "/api/services/team-nb/events"):
        answer = await bob.http.get(path, headers=bob.headers(TEAM))
        assert answer.status_code == 200, answer.text
        leaked = [s for s in secrets if s in answer.text]
        ledger.expect_denied("shared service", f"bob GET {path}", bool(leaked), str(leaked))
    member_view = await bob.call("GET", "/api/services/team-nb", project=TEAM)
    assert member_view["values"]["s3"]["secretAccessKey"] == "********"
    assert member_view["password"]  # the service's own password: members need it to open it
    await alice.call("PATCH", "/api/me", json={"git_token": ""})


async def test_a_shared_service_holds_only_the_projects_credentials(
    tenancy: Tenancy, ledger: Ledger
) -> None:
    """What a member running code in the shared service could read: it reaches the project's
    bucket and secrets, not the owner's personal ones, nor a project the member is not in."""
    alice = tenancy.users["alice"]
    platform = tenancy.platform
    storage, secret_store = platform.storage, platform.secret_store
    assert storage is not None and secret_store is not None
    for project in ("user-alice", PRIVATE, TEAM):
        await alice.call(
            "PUT", f"/api/secrets/values/{project}/db", json={"data": {"K": "v"}}, project=project
        )
        await alice.call(
            "PUT",
            f"/api/storage/buckets/{project}/objects/data.csv",
            content=b"a\n1\n",
            project=project,
        )
    await launch(alice, "jupyter-python", "team-nb2", project=TEAM, shared=True)
    with platform.db.session() as session:
        row = session.get(Service, "team-nb2")
        assert row is not None
        values = json.loads(json.dumps(row.values))  # what the process got
    s3_values, vault_values = values["s3"], values["vault"]
    s3 = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name=storage.region,
        aws_access_key_id=s3_values["accessKeyId"],
        aws_secret_access_key=s3_values["secretAccessKey"],
        aws_session_token=s3_values["sessionToken"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    assert s3.get_object(Bucket=TEAM, Key="data.csv")["Body"].read() == b"a\n1\n"  # control
    for bucket in ("user-alice", PRIVATE):
        for name, call in (
            ("list", lambda b=bucket: s3.list_objects_v2(Bucket=b)),
            ("get", lambda b=bucket: s3.get_object(Bucket=b, Key="data.csv")),
            ("put", lambda b=bucket: s3.put_object(Bucket=b, Key="x", Body=b"x")),
        ):
            try:
                call()
                succeeded = True
            except botocore.exceptions.ClientError:
                succeeded = False
            ledger.expect_denied("shared service credentials", f"S3 {name} {bucket}", succeeded)

    vault = VaultClient(secret_store.address, vault_values["token"])
    try:
        mount = secret_store.mount
        assert await vault.request("GET", f"{mount}/data/{TEAM}/db")  # control
        for project in ("user-alice", PRIVATE):
            for method in ("GET", "LIST"):
                where = "data" if method == "GET" else "metadata"
                try:
                    await vault.request(method, f"{mount}/{where}/{project}/db")
                    succeeded = True
                except DatalabError:
                    succeeded = False
                ledger.expect_denied(
                    "shared service credentials", f"Vault {method} {project}", succeeded
                )
    finally:
        await vault.aclose()
    for service in ("team-nb", "team-nb2"):
        await alice.call("DELETE", f"/api/services/{service}", project=TEAM)
