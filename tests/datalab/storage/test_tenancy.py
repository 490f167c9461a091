"""Tenancy with the real embedded SeaweedFS (STS) and OpenBao (JWT auth): the credentials a
launch injects reach the user's and the project's buckets and secrets, and none of anyone
else's. Attempts are counted in the tenancy ledger (tests/datalab/tenancy)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

import botocore
import botocore.exceptions
import httpx
import psutil
import pytest
from botocore.config import Config

from datalab.errors import DatalabError
from datalab.identity.issuer import AUDIENCE_S3, AUDIENCE_VAULT, TokenIssuer
from datalab.secrets.service import AUTH_MOUNT, ROLE
from datalab.storage.seaweedfs import ROLE_ARN

from ..conftest import Ledger
from .conftest import TEAM, Federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError:
        return False
    return True


async def test_embedded_servers_are_private(federated: Federated) -> None:
    platform = federated.platform
    storage, secrets = platform.storage, platform.secret_store
    assert storage is not None and storage.embedded is not None
    assert secrets is not None and secrets.embedded is not None
    keys = platform.settings.data_dir / "keys"
    for name in ("seaweedfs-admin.json", "openbao-init.json", "issuer.pem"):
        assert stat.S_IMODE(os.stat(keys / name).st_mode) == 0o600, name
    # every listener of both servers is on loopback
    for process in (storage.embedded.process, secrets.embedded.process):
        assert process is not None and process.pid is not None
        listening = [
            c.laddr
            for c in psutil.Process(process.pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    # anonymous S3 requests are refused
    import boto3

    anonymous = boto3.client(
        "s3",
        endpoint_url=storage.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED),
    )
    await storage.ensure_bucket("user-alice")
    assert not _succeeds(lambda: anonymous.list_objects_v2(Bucket="user-alice"))
    assert not _succeeds(lambda: anonymous.put_object(Bucket="user-alice", Key="x", Body=b"x"))
    # data and logs stay in the data directory
    assert (platform.settings.data_dir / "logs" / "seaweedfs").is_dir()
    assert (platform.settings.data_dir / "openbao" / "data").is_dir()


async def test_launch_injects_scoped_s3_vault_and_git(federated: Federated) -> None:
    alice = federated.users["alice"]
    launched = await alice.call(
        "POST", "/api/services", json={"chart": "jupyter-python", "name": "nb-inject"}
    )
    values = (await alice.call("GET", f"/api/services/{launched['id']}"))["values"]
    s3, vault = values["s3"], values["vault"]
    assert s3["enabled"] is True and s3["accessKeyId"].startswith("ASIA")
    assert s3["sessionToken"] and s3["secretAccessKey"]
    assert vault["token"] and vault["mount"] == "onyxia-kv"
    assert values["git"]["name"] == "alice"
    await alice.call("DELETE", f"/api/services/{launched['id']}")


async def test_tenancy_matrix(federated: Federated, ledger: Ledger) -> None:
    broker = federated.platform.services.credentials
    assert broker is not None
    alice_personal = await broker.for_launch("alice", "user-alice")
    alice_team = await broker.for_launch("alice", TEAM)
    bob = await broker.for_launch("bob", "user-bob")
    assert alice_team.s3_credentials and alice_personal.s3_credentials and bob.s3_credentials
    bob_s3 = federated.s3(bob.s3_credentials)
    bob_s3.put_object(Bucket="user-bob", Key="private.csv", Body=b"a,b\n1,2\n")

    # alice reaches her bucket and her project's, with the credentials of each launch
    for injection, bucket in ((alice_personal, "user-alice"), (alice_team, TEAM)):
        assert injection.s3_credentials is not None
        client = federated.s3(injection.s3_credentials)
        client.put_object(Bucket=bucket, Key="notes/hello.txt", Body=b"hello")
        assert client.get_object(Bucket=bucket, Key="notes/hello.txt")["Body"].read() == b"hello"
        assert client.list_objects_v2(Bucket=bucket)["KeyCount"] >= 1
    # a service in a shared project holds the project's space only (members may use it)
    team_credentials = alice_team.s3_credentials
    assert team_credentials is not None
    assert not _succeeds(
        lambda: federated.s3(team_credentials).get_object(
            Bucket="user-alice", Key="notes/hello.txt"
        )
    )

    # every attempt on bob's bucket fails, whatever alice's credentials
    attempts = successes = 0
    call: Callable[[], object]
    for injection in (alice_personal, alice_team):
        assert injection.s3_credentials is not None
        client = federated.s3(injection.s3_credentials)
        for call in (
            lambda c=client: c.list_objects_v2(Bucket="user-bob"),
            lambda c=client: c.get_object(Bucket="user-bob", Key="private.csv"),
            lambda c=client: c.head_object(Bucket="user-bob", Key="private.csv"),
            lambda c=client: c.put_object(Bucket="user-bob", Key="intrusion", Body=b"x"),
            lambda c=client: c.delete_object(Bucket="user-bob", Key="private.csv"),
            lambda c=client: c.delete_bucket(Bucket="user-bob"),
            lambda c=client: c.create_bucket(Bucket="user-mallory"),
            lambda c=client: c.get_bucket_policy(Bucket="user-bob"),
        ):
            attempts += 1
            got_through = _succeeds(call)
            successes += got_through
            ledger.record("S3 with another's credentials", f"call {attempts}", got_through)
    # nor can bob reach the team's bucket, of which he is not a member
    for call in (
        lambda: bob_s3.list_objects_v2(Bucket=TEAM),
        lambda: bob_s3.get_object(Bucket=TEAM, Key="notes/hello.txt"),
        lambda: bob_s3.put_object(Bucket=TEAM, Key="intrusion", Body=b"x"),
    ):
        attempts += 1
        got_through = _succeeds(call)
        successes += got_through
        ledger.record("S3 with another's credentials", f"call {attempts}", got_through)
    assert attempts == 19 and successes == 0
    buckets = {b["Name"] for b in bob_s3.list_buckets()["Buckets"]}
    assert buckets <= {"user-bob"}

    # secrets: alice writes hers and the team's; bob reaches neither
    secrets = federated.platform.secret_store
    assert secrets is not None and alice_team.vault is not None and bob.vault is not None
    assert alice_personal.vault is not None
    from datalab.secrets.vault import VaultClient

    mount = secrets.mount
    # the personal launch's token reaches alice's directory and her projects'
    alice_vault = VaultClient(secrets.address, alice_personal.vault.token)
    team_vault = VaultClient(secrets.address, alice_team.vault.token)
    bob_vault = VaultClient(secrets.address, bob.vault.token)
    try:
        for top in ("user-alice", TEAM):
            await alice_vault.request(
                "POST", f"{mount}/data/{top}/db", json={"data": {"PASSWORD": "s3cret"}}
            )
            read = await alice_vault.request("GET", f"{mount}/data/{top}/db")
            assert read is not None and read["data"]["data"]["PASSWORD"] == "s3cret"
        await bob_vault.request("POST", f"{mount}/data/user-bob/x", json={"data": {"K": "v"}})
        attempts = successes = 0
        assert await team_vault.request("GET", f"{mount}/data/{TEAM}/db")
        for client, path in (
            (alice_vault, "user-bob/x"),
            (bob_vault, "user-alice/db"),
            (bob_vault, f"{TEAM}/db"),
            (team_vault, "user-alice/db"),  # a team service holds the team's secrets only
        ):
            for method, body in (("GET", None), ("POST", {"data": {"K": "overwritten"}})):
                attempts += 1
                try:
                    await client.request(method, f"{mount}/data/{path}", json=body)
                    got_through = True
                except DatalabError as exc:
                    assert "s3cret" not in str(exc)
                    got_through = False
                successes += got_through
                ledger.record("Vault with another's token", f"{method} {path}", got_through)
            attempts += 1
            try:
                await client.request("LIST", f"{mount}/metadata/{path.split('/')[0]}")
                got_through = True
            except DatalabError:
                got_through = False
            successes += got_through
            ledger.record("Vault with another's token", f"LIST {path}", got_through)
        assert attempts == 12 and successes == 0
    finally:
        await alice_vault.aclose()
        await team_vault.aclose()
        await bob_vault.aclose()


async def test_forged_expired_and_misdirected_tokens_are_refused(federated: Federated) -> None:
    platform = federated.platform
    storage, secrets = platform.storage, platform.secret_store
    assert storage is not None and secrets is not None and platform.issuer is not None
    issuer = platform.issuer
    claims = {"preferred_username": "alice", "bucket": "user-alice", "project_bucket": "user-alice"}
    valid = issuer.issue("alice", AUDIENCE_S3, 300, claims)
    await storage.assume_role(valid, "alice", 900)  # the control: a good token works

    header, payload, signature = valid.split(".")
    import base64
    import json

    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["bucket"] = "user-bob"
    forged_payload = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    stranger = TokenIssuer(platform.settings.data_dir / "stranger.pem", issuer.issuer_url)
    bad_tokens = {
        "tampered": f"{header}.{forged_payload}.{signature}",
        "expired": issuer.issue("alice", AUDIENCE_S3, -120, claims),
        "other key": stranger.issue("alice", AUDIENCE_S3, 300, claims),
        "other audience": issuer.issue("alice", AUDIENCE_VAULT, 300, claims),
    }
    from datalab.storage.service import StorageUnavailable

    for name, token in bad_tokens.items():
        with pytest.raises(StorageUnavailable, match="refused"):
            await storage.assume_role(token, "alice", 900)
            pytest.fail(f"STS accepted the {name} token")

    vault_claims = {"preferred_username": "alice", "projects": []}
    vault_bad = {
        "expired": issuer.issue("alice", AUDIENCE_VAULT, -120, vault_claims),
        "other key": stranger.issue("alice", AUDIENCE_VAULT, 300, vault_claims),
        "other audience": issuer.issue("alice", AUDIENCE_S3, 300, vault_claims),
    }
    good = issuer.issue("alice", AUDIENCE_VAULT, 300, vault_claims)
    h, p, s = good.split(".")
    vault_bad["tampered"] = f"{h}.{p[:-4]}AAAA.{s}"
    async with httpx.AsyncClient(base_url=secrets.address) as http:
        ok = await http.post(f"/v1/auth/{AUTH_MOUNT}/login", json={"role": ROLE, "jwt": good})
        assert ok.status_code == 200
        for name, token in vault_bad.items():
            refused = await http.post(
                f"/v1/auth/{AUTH_MOUNT}/login", json={"role": ROLE, "jwt": token}
            )
            assert refused.status_code in (400, 403), f"Vault accepted the {name} token"
    assert ROLE_ARN


async def test_other_users_services_logs_and_proxy_are_out_of_reach(
    federated: Federated, ledger: Ledger
) -> None:
    alice, bob = federated.users["alice"], federated.users["bob"]
    await bob.call("POST", "/api/services", json={"chart": "jupyter-python", "name": "bob-nb"})
    attempts = successes = 0
    for method, path in (
        ("GET", "/api/services/bob-nb"),
        ("GET", "/api/services/bob-nb/logs"),
        ("GET", "/api/services/bob-nb/events"),
        ("POST", "/api/services/bob-nb/suspend"),
        ("DELETE", "/api/services/bob-nb"),
        ("GET", "/s/bob-nb/"),
        ("GET", "/api/storage/buckets/user-bob/objects"),
        ("GET", "/api/secrets/tree/user-bob"),
    ):
        for project in (None, "user-bob"):
            attempts += 1
            response = await alice.http.request(method, path, headers=alice.headers(project))
            successes += response.is_success
            ledger.record(
                "API on another user's resources", f"{method} {path}", response.is_success
            )
    assert attempts == 16 and successes == 0
    assert "bob-nb" in {s["id"] for s in (await bob.call("GET", "/api/services"))["services"]}
    await bob.call("DELETE", "/api/services/bob-nb")
