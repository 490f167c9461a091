"""The storage API (object browser) against the real embedded SeaweedFS, with the callers' own
STS credentials."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datalab.processes import free_port

from .conftest import TEAM, Federated, add_users, embedded_settings, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LIMIT = 40 * 1024 * 1024


@pytest.fixture(scope="module")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    port = free_port()
    settings = embedded_settings(
        tmp_path_factory.mktemp("objects") / "data",
        # users reach S3 at another address than the platform does (here another spelling of
        # the same loopback endpoint): share links must point there, signed for that host
        storage={"max_upload_bytes": LIMIT, "port": port, "public_url": f"http://localhost:{port}"},
        secrets={"mode": "disabled"},
    )
    platform, http = await start_federated(settings)
    try:
        yield Federated(platform, http, add_users(platform, http))
    finally:
        await http.aclose()
        await platform.stop()


def objects_url(bucket: str, key: str = "") -> str:
    return f"/api/storage/buckets/{bucket}/objects" + (f"/{key}" if key else "")


async def test_upload_list_download_delete(store: Federated) -> None:
    alice = store.users["alice"]
    assert (await alice.call("GET", "/api/storage/buckets"))["buckets"] == ["user-alice"]
    team = await alice.call("GET", "/api/storage/buckets", project=TEAM)
    assert team["buckets"] == [TEAM, "user-alice"]

    for name in ("a.csv", "b.csv", "c.csv", "sub/d.csv"):
        done = await alice.call("PUT", objects_url("user-alice", f"data/{name}"), content=b"x,y\n")
        assert done["size"] == 4
    await alice.call("PUT", objects_url("user-alice", "empty-folder/"))
    top = await alice.call("GET", objects_url("user-alice"))
    assert set(top["folders"]) == {"data/", "empty-folder/"}
    page = await alice.call("GET", objects_url("user-alice") + "?prefix=data/&max_keys=2")
    assert [o["key"] for o in page["objects"]] == ["data/a.csv", "data/b.csv"]
    assert page["truncated"] and page["next_token"]
    rest = await alice.call(
        "GET", objects_url("user-alice"), params={"prefix": "data/", "token": page["next_token"]}
    )
    assert [o["key"] for o in rest["objects"]] == ["data/c.csv"] and rest["folders"] == [
        "data/sub/"
    ]

    # a large upload streams through as a multipart upload, and streams back
    payload = os.urandom(20 * 1024 * 1024 + 123)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 1024 * 1024):
            yield payload[start : start + 1024 * 1024]

    big = await alice.call("PUT", objects_url("user-alice", "big/blob.bin"), content=body())
    assert big["size"] == len(payload) and big["parts"] == 5  # 5 MiB parts (20 MiB + 123 B)
    response = await alice.http.get(
        objects_url("user-alice", "big/blob.bin"), headers=alice.headers()
    )
    assert response.status_code == 200 and response.content == payload
    assert response.headers["content-length"] == str(len(payload))

    folder = await alice.call("DELETE", objects_url("user-alice", "data"), expect=422)
    assert "recursive=true" in folder["error"]["message"]
    await alice.call("DELETE", objects_url("user-alice", "data/nope.csv"), expect=404)
    await alice.call("DELETE", objects_url("user-alice", "data/a.csv"))
    gone = await alice.call("DELETE", objects_url("user-alice", "data") + "?recursive=true")
    assert sorted(gone["deleted"]) == ["data/b.csv", "data/c.csv", "data/sub/d.csv"]
    await alice.call("GET", objects_url("user-alice", "data/b.csv"), expect=404)
    assert "data/" not in (await alice.call("GET", objects_url("user-alice")))["folders"]


async def test_recursive_delete_leaves_nothing_of_the_folder(store: Federated) -> None:
    alice = store.users["alice"]
    for project in (None, TEAM):
        bucket = project or "user-alice"
        # folders made with "new folder" (empty markers), around and among objects
        for key in ("tmp/", "tmp/sub/", "tmp/sub/deep/", "tmp/empty/"):
            await alice.call("PUT", objects_url(bucket, key), project=project)
        for key in ("tmp/x.csv", "tmp/sub/y.csv", "tmp/sub/deep/z.csv", "tmp/other/w.csv"):
            await alice.call("PUT", objects_url(bucket, key), content=b"x", project=project)
        await alice.call("PUT", objects_url(bucket, "tmp2/kept.csv"), content=b"x", project=project)
        gone = await alice.call(
            "DELETE", objects_url(bucket, "tmp") + "?recursive=true", project=project
        )
        assert len(gone["deleted"]) == 8  # the markers are objects too
        top = await alice.call("GET", objects_url(bucket), project=project)
        assert "tmp/" not in top["folders"] and "tmp2/" in top["folders"], top
        everything = await alice.call(
            "GET", objects_url(bucket), params={"prefix": "tmp/", "delimiter": ""}, project=project
        )
        assert everything["objects"] == [] and everything["folders"] == []


async def test_bad_keys_foreign_buckets_and_limits(store: Federated) -> None:
    alice, bob = store.users["alice"], store.users["bob"]
    for key in ("../user-bob/x", "a//b", "a/./b", "a/../../b"):
        # encoded, as an attacker would send it past URL normalisation
        encoded = quote(key, safe="")
        problem = await alice.call(
            "PUT", objects_url("user-alice", encoded), content=b"x", expect=422
        )
        assert "key" in problem["error"]["message"]
    for method in ("GET", "PUT", "DELETE"):
        denied = await alice.call(method, objects_url("user-bob", "x"), expect=403)
        assert "user-bob" in denied["error"]["message"]
    await bob.call("GET", objects_url(TEAM), expect=403)
    await bob.call("GET", objects_url(TEAM), project=TEAM, expect=403)  # not a member
    too_big = await alice.call(
        "PUT", objects_url("user-alice", "huge.bin"), content=b"x" * (LIMIT + 1), expect=413
    )
    assert "max_upload_bytes" in too_big["error"]["message"]
    await alice.call("GET", objects_url("user-alice", "huge.bin"), expect=404)


async def test_share_links_and_public_prefixes(store: Federated) -> None:
    alice = store.users["alice"]
    await alice.call("PUT", objects_url("user-alice", "reports/r.txt"), content=b"report")
    await alice.call("PUT", objects_url("user-alice", "private/p.txt"), content=b"private")
    shared = await alice.call(
        "POST", "/api/storage/buckets/user-alice/share", json={"key": "reports/r.txt"}
    )
    assert (
        "X-Amz-Signature" in shared["url"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in shared["url"]
    )
    storage = store.platform.storage
    assert storage is not None
    public = store.platform.settings.storage.public_url
    assert public and public != storage.endpoint_url
    assert shared["url"].startswith(f"{public}/user-alice/reports/r.txt?")
    async with httpx.AsyncClient() as anonymous:
        assert (await anonymous.get(shared["url"])).content == b"report"
        # the signature covers the public host: the link at the internal address is refused
        internal = storage.endpoint_url + shared["url"].removeprefix(public)
        assert (await anonymous.get(internal)).status_code == 403
        short = await alice.call(
            "POST",
            "/api/storage/buckets/user-alice/share",
            json={"key": "reports/r.txt", "expires_s": 1},
        )
        await asyncio.sleep(2.1)
        assert (await anonymous.get(short["url"])).status_code == 403
        await alice.call(
            "POST",
            "/api/storage/buckets/user-alice/share",
            json={"key": "reports/r.txt", "expires_s": 8 * 24 * 3600},
            expect=422,
        )
        public_url = f"{storage.endpoint_url}/user-alice/reports/r.txt"
        assert (await anonymous.get(public_url)).status_code == 403
        await alice.call(
            "PUT",
            "/api/storage/buckets/user-alice/public",
            json={"prefix": "reports/", "public": True},
        )
        listed = await alice.call("GET", "/api/storage/buckets/user-alice/public")
        assert listed["public_prefixes"] == ["reports/"]
        assert (await anonymous.get(public_url)).content == b"report"
        private_url = f"{storage.endpoint_url}/user-alice/private/p.txt"
        assert (await anonymous.get(private_url)).status_code == 403
        await alice.call(
            "PUT",
            "/api/storage/buckets/user-alice/public",
            json={"prefix": "reports/", "public": False},
        )
        assert (await anonymous.get(public_url)).status_code == 403


async def test_preview_and_snippets(store: Federated) -> None:
    alice = store.users["alice"]
    table = pa.table({"code": ["01.11Z", "62.01Z", "85.59A"] * 1000, "n": list(range(3000))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=500)
    await alice.call("PUT", objects_url("user-alice", "t/naf.parquet"), content=buffer.getvalue())
    csv = "code;label\n" + "".join(f"{i:02d}.1;activité {i}\n" for i in range(20000))
    await alice.call("PUT", objects_url("user-alice", "t/naf.csv"), content=csv.encode())
    lines = "".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(50))
    await alice.call("PUT", objects_url("user-alice", "t/log.jsonl"), content=lines.encode())

    base = "/api/storage/buckets/user-alice/preview"
    parquet = await alice.call("GET", f"{base}/t/naf.parquet?rows=5")
    assert parquet["schema"] == [{"name": "code", "type": "string"}, {"name": "n", "type": "int64"}]
    assert parquet["total_rows"] == 3000 and len(parquet["rows"]) == 5
    assert parquet["rows"][1] == {"code": "62.01Z", "n": 1}
    csv_preview = await alice.call("GET", f"{base}/t/naf.csv?rows=3")
    assert csv_preview["delimiter"] == ";" and csv_preview["truncated"] is True
    assert csv_preview["rows"][2] == {"code": "02.1", "label": "activité 2"}
    json_preview = await alice.call("GET", f"{base}/t/log.jsonl?rows=2")
    assert json_preview["rows"] == [{"id": 0, "text": "t0"}, {"id": 1, "text": "t1"}]
    unknown = await alice.call("GET", f"{base}/t/file.bin", expect=422)
    assert "format=" in unknown["error"]["message"]
    broken = await alice.call("GET", f"{base}/t/naf.csv?format=parquet", expect=422)
    assert "Parquet" in broken["error"]["message"]

    code = await alice.call(
        "GET", "/api/storage/snippets", params={"bucket": "user-alice", "key": "t/naf.parquet"}
    )
    assert set(code["snippets"]) == {
        "boto3",
        "s3fs",
        "pandas",
        "polars",
        "pyarrow",
        "duckdb",
        "aws-cli",
        "mc",
        "rclone",
    }
    # the boto3 snippet works as shown
    namespace: dict[str, Any] = {}  # what the snippet defines
    snippet = code["snippets"]["boto3"].replace("s3.download_file", "result = s3.get_object")
    snippet = snippet.replace(', "naf.parquet")', ")")
    snippet = snippet.replace(
        '"user-alice", "t/naf.parquet"', 'Bucket="user-alice", Key="t/naf.parquet"'
    )
    exec(snippet, namespace)  # noqa: S102 - our own generated code
    assert namespace["result"]["ContentLength"] == len(buffer.getvalue())
