"""Long-running services and failures, with the real embedded servers: S3 credentials refreshed
through the platform, renewable Vault tokens, a crashed server restarted, S3 down → 503."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from datalab.processes import free_port
from datalab.secrets.vault import VaultClient
from datalab.storage.seaweedfs import EmbeddedSeaweedFS, role_policy

from .conftest import Federated, add_users, embedded_settings, serving, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

VAULT_TTL_S = 5

# A "service": only the environment the platform injects, and boto3's own credential chain.
SERVICE_SCRIPT = """
import json, os, boto3
session = boto3.session.Session()
s3 = session.client("s3", endpoint_url=os.environ["S3_URL"], region_name="us-east-1")
keys = []
for i in range(3):
    s3.put_object(Bucket=os.environ["BUCKET"], Key=f"run/{i}.txt", Body=b"x")
    keys.append(session.get_credentials().get_frozen_credentials().access_key)
print(json.dumps({"keys": keys, "method": session.get_credentials().method}))
"""


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    """The platform on a real port too: services call it to refresh their credentials."""
    port = free_port()
    settings = embedded_settings(
        tmp_path_factory.mktemp("recovery") / "data",
        server={"port": port},
        storage={"credentials_ttl_s": 900},
        secrets={"token_ttl_s": VAULT_TTL_S},
    )
    platform, http = await start_federated(settings)
    try:
        async with serving(platform):
            yield Federated(platform, http, add_users(platform, http))
    finally:
        await http.aclose()
        await platform.stop()


async def test_service_credentials_refresh_through_the_platform(served: Federated) -> None:
    alice = served.users["alice"]
    launched = await alice.call(
        "POST", "/api/services", json={"chart": "jupyter-python", "name": "long-job"}
    )
    service = await alice.call("GET", f"/api/services/{launched['id']}")
    assert service["id"] == "long-job"
    broker = served.platform.services.credentials
    assert broker is not None and served.platform.storage is not None
    injection = await broker.for_launch("alice", "user-alice", "long-job")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(served.platform.settings.data_dir),
        "S3_URL": served.platform.storage.endpoint_url,
        "BUCKET": "user-alice",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": injection.refresh_url,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": f"Bearer {injection.refresh_token}",
    }
    # credentials of 900 s are inside boto3's refresh window (15 min): it asks the platform
    # again before each use, as it would near the expiry of longer ones
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SERVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout)
    assert answer["method"] == "container-role"
    assert len(set(answer["keys"])) == 3, "boto3 did not refresh its credentials"

    # the refresh token dies with its service
    await alice.call("DELETE", "/api/services/long-job")
    async with httpx.AsyncClient() as http:
        refused = await http.get(
            injection.refresh_url,
            headers={"Authorization": f"Bearer {injection.refresh_token}"},
        )
        assert refused.status_code == 401
        assert "no longer exists" in refused.json()["error"]["message"]
        forged = await http.get(
            injection.refresh_url, headers={"Authorization": "Bearer not-a-token"}
        )
        assert forged.status_code == 401


async def test_vault_token_renewed_outlives_its_first_ttl(served: Federated) -> None:
    secrets = served.platform.secret_store
    assert secrets is not None
    renewed = await secrets.user_token("alice", [])
    idle = await secrets.user_token("alice", [])
    assert renewed.ttl_s == VAULT_TTL_S
    client = VaultClient(secrets.address)
    path = f"{secrets.mount}/data/user-alice/renewed"
    try:
        deadline = time.monotonic() + VAULT_TTL_S * 2
        while time.monotonic() < deadline:  # a long-running service renewing its token
            await client.request("POST", "auth/token/renew-self", token=renewed.token)
            await client.request("POST", path, json={"data": {"K": "v"}}, token=renewed.token)
            await asyncio.sleep(1)
        await client.request("GET", path, token=renewed.token)
        with pytest.raises(Exception, match=r"permission denied|invalid token"):
            await client.request("GET", path, token=idle.token)
    finally:
        await client.aclose()


async def test_resume_renews_the_credentials_that_expired_while_suspended(
    served: Federated,
) -> None:
    alice = served.users["alice"]
    await alice.call("POST", "/api/services", json={"chart": "jupyter-python", "name": "later"})
    before = (await alice.call("GET", "/api/services/later"))["values"]
    await alice.call("POST", "/api/services/later/suspend")
    secrets = served.platform.secret_store
    assert secrets is not None
    client = VaultClient(secrets.address)
    try:
        await asyncio.sleep(VAULT_TTL_S + 1)  # the launch's token expires meanwhile
        with pytest.raises(Exception, match=r"permission denied|invalid token"):
            await client.request("GET", "auth/token/lookup-self", token=before["vault"]["token"])
        await alice.call("POST", "/api/services/later/resume")
        after = (await alice.call("GET", "/api/services/later"))["values"]
        await client.request("GET", "auth/token/lookup-self", token=after["vault"]["token"])
    finally:
        await client.aclose()
    assert after["vault"]["token"] != before["vault"]["token"]
    assert after["s3"]["sessionToken"] != before["s3"]["sessionToken"]
    assert after["s3"]["credentialsAuthorization"] != before["s3"]["credentialsAuthorization"]
    # nothing else changes: the service keeps its password, its bucket, its settings
    for values in (before, after):
        for key in ("sessionToken", "accessKeyId", "secretAccessKey", "credentialsAuthorization"):
            values["s3"].pop(key)
        values["vault"].pop("token")
    assert after == before
    await alice.call("DELETE", "/api/services/later")


async def test_storage_crash_is_restarted_and_the_platform_recovers(served: Federated) -> None:
    storage = served.platform.storage
    assert storage is not None and storage.embedded is not None
    process = storage.embedded.process
    assert process is not None and process.pid is not None
    before = process.pid
    os.killpg(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while process.restarts < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert process.restarts == 1 and process.pid != before
    alice = served.users["alice"]
    credentials = await alice.call("GET", "/api/storage/credentials")
    assert credentials["credential_process"]["AccessKeyId"].startswith("ASIA")


async def test_secrets_crash_is_restarted_unsealed_and_recovers(served: Federated) -> None:
    secrets = served.platform.secret_store
    assert secrets is not None and secrets.embedded is not None
    process = secrets.embedded.process
    assert process is not None and process.pid is not None
    alice = served.users["alice"]
    await alice.call("PUT", "/api/secrets/values/user-alice/kept", json={"data": {"K": "v"}})
    os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while process.restarts < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert process.restarts == 1
    # persistent storage, unsealed again by the platform: the secret is still there
    kept = await alice.call("GET", "/api/secrets/values/user-alice/kept")
    assert kept["data"] == {"K": "v"}


async def test_storage_down_is_a_clear_503(served: Federated) -> None:
    storage = served.platform.storage
    assert storage is not None and storage.embedded is not None
    await storage.embedded.stop()
    storage._known_buckets.clear()
    alice = served.users["alice"]
    down = await alice.call("GET", "/api/storage/credentials", expect=503)
    assert "unavailable" in down["error"]["message"]
    launch = await alice.call("POST", "/api/services", json={"chart": "jupyter-python"}, expect=503)
    assert launch["error"]["code"] == "storage_unavailable"


async def test_secrets_down_is_a_clear_503(served: Federated) -> None:
    secrets = served.platform.secret_store
    assert secrets is not None and secrets.embedded is not None
    await secrets.embedded.stop()
    alice = served.users["alice"]
    down = await alice.call("GET", "/api/secrets/values/user-alice/kept", expect=503)
    assert down["error"]["code"] == "secrets_unavailable"
    assert "unavailable" in down["error"]["message"]


async def test_a_port_taken_while_seaweedfs_starts_is_replaced(tmp_path: Path) -> None:
    """Its internal ports are chosen free, then bound a moment later: another program taking
    one in between makes the first start fail, the second uses a new port."""
    s3 = EmbeddedSeaweedFS(tmp_path / "data")
    taken = s3.ports["filer"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        try:
            await s3.start(
                issuer_url="http://127.0.0.1:9/",
                jwks_url="http://127.0.0.1:9/jwks",
                audience="x",
                max_session_s=3600,
                policy=role_policy(),
            )
            assert s3.ports["filer"] != taken
            async with httpx.AsyncClient() as http:
                assert (await http.get(s3.endpoint_url + "/")).status_code == 403
        finally:
            await s3.stop()
