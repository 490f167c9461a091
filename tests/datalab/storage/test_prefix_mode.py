"""Onyxia's prefix bucket mode with the real SeaweedFS: one shared bucket, one prefix per
project; STS sessions and the storage API confined to the caller's prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import botocore.exceptions
import httpx
import pytest

from .conftest import TEAM, Federated, add_users, embedded_settings, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHARED = "lab-shared"


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    settings = embedded_settings(
        tmp_path_factory.mktemp("prefix") / "data",
        storage={"bucket_mode": "prefix", "shared_bucket": SHARED},
        secrets={"mode": "disabled"},
    )
    platform, http = await start_federated(settings)
    try:
        yield Federated(platform, http, add_users(platform, http))
    finally:
        await http.aclose()
        await platform.stop()


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError:
        return False
    return True


async def test_sessions_reach_only_their_prefixes(shared: Federated) -> None:
    broker = shared.platform.services.credentials
    assert broker is not None
    alice = await broker.for_launch("alice", TEAM)
    bob = await broker.for_launch("bob", "user-bob")
    assert alice.s3 is not None and alice.s3.bucket == SHARED
    assert alice.s3.object_name_prefix == f"{TEAM}/"
    assert alice.s3_credentials is not None and bob.s3_credentials is not None
    a, b = shared.s3(alice.s3_credentials), shared.s3(bob.s3_credentials)
    b.put_object(Bucket=SHARED, Key="user-bob/private.txt", Body=b"bob")
    a.put_object(Bucket=SHARED, Key=f"{TEAM}/x.txt", Body=b"x")
    assert a.list_objects_v2(Bucket=SHARED, Prefix=f"{TEAM}/")["KeyCount"] == 1
    attempts = [
        # a service in a shared project holds the project's space only (members may use it)
        lambda: a.put_object(Bucket=SHARED, Key="user-alice/x.txt", Body=b"x"),
        lambda: a.get_object(Bucket=SHARED, Key="user-bob/private.txt"),
        lambda: a.put_object(Bucket=SHARED, Key="user-bob/intrusion", Body=b"x"),
        lambda: a.list_objects_v2(Bucket=SHARED, Prefix="user-bob/"),
        lambda: a.list_objects_v2(Bucket=SHARED),  # the whole bucket
        lambda: a.put_object(Bucket=SHARED, Key="user-alicex/x", Body=b"x"),  # a longer name
        lambda: a.delete_object(Bucket=SHARED, Key="user-bob/private.txt"),
        lambda: b.get_object(Bucket=SHARED, Key=f"{TEAM}/x.txt"),
        lambda: b.put_bucket_policy(Bucket=SHARED, Policy="{}"),
    ]
    assert sum(_succeeds(call) for call in attempts) == 0


async def test_the_api_shows_each_project_as_its_own_bucket(shared: Federated) -> None:
    alice = shared.users["alice"]
    url = "/api/storage/buckets/user-alice/objects"
    await alice.call("PUT", f"{url}/docs/a.txt", content=b"hello")
    listing = await alice.call("GET", url)
    assert listing["folders"] == ["docs/"]
    inside = await alice.call("GET", url, params={"prefix": "docs/"})
    assert [o["key"] for o in inside["objects"]] == ["docs/a.txt"]
    assert (await alice.http.get(f"{url}/docs/a.txt", headers=alice.headers())).content == b"hello"
    credentials = await alice.call("GET", "/api/storage/credentials")
    assert credentials["bucket"] == SHARED and credentials["prefix"] == "user-alice/"
    link = await alice.call(
        "POST", "/api/storage/buckets/user-alice/share", json={"key": "docs/a.txt"}
    )
    await alice.call(
        "PUT", "/api/storage/buckets/user-alice/public", json={"prefix": "docs/", "public": True}
    )
    public = await alice.call("GET", "/api/storage/buckets/user-alice/public")
    assert public["public_prefixes"] == ["docs/"]
    storage = shared.platform.storage
    assert storage is not None
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(link["url"])).content == b"hello"
        direct = f"{storage.endpoint_url}/{SHARED}/user-alice/docs/a.txt"
        assert (await anonymous.get(direct)).content == b"hello"
    code = await alice.call(
        "GET", "/api/storage/snippets", params={"bucket": "user-alice", "key": "docs/a.txt"}
    )
    assert f"s3://{SHARED}/user-alice/docs/a.txt" in code["snippets"]["duckdb"]
    gone = await alice.call("DELETE", f"{url}/docs?recursive=true")
    assert gone["deleted"] == ["docs/a.txt"]
    # bob sees none of it, and cannot name alice's space
    await shared.users["bob"].call("GET", url, expect=403)
