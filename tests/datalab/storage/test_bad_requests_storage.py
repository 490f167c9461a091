"""A bad client against the storage and secrets APIs, with the real embedded SeaweedFS and
OpenBao (issue 14, item 11): odd keys, paths and files get a clear 4xx naming the problem,
never a 500, 502 or 503 (which say the platform or its stores are broken)."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .conftest import Federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _objects(key: str) -> str:
    return "/api/storage/buckets/user-alice/objects/" + quote(key, safe="/")


def _secret(path: str, kind: str = "values") -> str:
    return f"/api/secrets/{kind}/" + quote(path, safe="/")


async def _json(http: httpx.AsyncClient, method: str, url: str, body: Any, **kw: Any) -> Any:
    """A JSON body as sent by any client, lone surrogates included (httpx refuses to encode
    them; JSON allows them escaped)."""
    headers = {**kw.pop("headers", {}), "Content-Type": "application/json"}
    return await http.request(method, url, content=json.dumps(body), headers=headers, **kw)


async def test_preview_of_a_binary_file_as_csv(federated: Federated) -> None:
    alice = federated.users["alice"]
    binary = os.urandom(2048) + b"\x00" * 64 + os.urandom(2048)
    await alice.call("PUT", _objects("noise.bin"), content=binary)
    for fmt in ("csv", "json", "parquet"):
        response = await federated.http.get(
            "/api/storage/buckets/user-alice/preview/noise.bin",
            params={"format": fmt},
            headers=alice.headers(),
        )
        assert response.status_code == 422, (fmt, response.text)
        assert "noise.bin" in response.json()["error"]["message"]


@pytest.mark.parametrize("key", ["a\\b", "a\\..\\b", "\\", "dir\\", "..\\user-bob\\x"])
async def test_keys_with_backslashes_are_refused(federated: Federated, key: str) -> None:
    alice = federated.users["alice"]
    for method in ("PUT", "GET", "DELETE"):
        body = b"x" if method == "PUT" else None
        response = await federated.http.request(
            method, _objects(key), content=body, headers=alice.headers()
        )
        assert response.status_code == 422, (method, response.text)
        assert "backslash" in response.json()["error"]["message"]
    listed = await federated.http.get(
        "/api/storage/buckets/user-alice/objects", params={"prefix": key}, headers=alice.headers()
    )
    assert listed.status_code == 422


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("user-alice/x/", "names a directory"),
        ("user-alice/", "names a directory"),
        ("user-alice/\u202eexe.txt", "invisible formatting"),
        ("user-alice/a\u200bb", "invisible formatting"),
        ("user-alice/a\\b", "backslash"),
        ("user-alice/" + "a" * 2000, "longer than"),
    ],
)
async def test_odd_secret_paths_are_invalid(federated: Federated, path: str, fragment: str) -> None:
    alice = federated.users["alice"]
    http = federated.http
    answers = [
        await http.put(_secret(path), json={"data": {"K": "v"}}, headers=alice.headers()),
        await http.get(_secret(path), headers=alice.headers()),
        await http.delete(_secret(path), headers=alice.headers()),
        await http.get(_secret(path, "export"), headers=alice.headers()),
        await http.post(
            "/api/secrets/rename",
            json={"source": "user-alice/exists", "target": path},
            headers=alice.headers(),
        ),
    ]
    for answer in answers:
        assert answer.status_code == 422, (answer.request.method, answer.text)
        assert fragment in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    "name", ["x%00", "%2e%2e", "a?b", "a#b", "a%2fb", "..%2f..%2fuser-bob", "é/日本", "a b"]
)
async def test_secret_names_are_names_not_url_syntax(federated: Federated, name: str) -> None:
    """Each name is the secret's name, exactly: never decoded again, nor cut at '?' or '#'."""
    alice = federated.users["alice"]
    path = f"user-alice/odd/{name}"
    written = await federated.http.put(
        _secret(path), json={"data": {"K": "v"}}, headers=alice.headers()
    )
    assert written.status_code == 200, written.text
    read = await alice.call("GET", _secret(path))
    assert read["path"] == path and read["data"] == {"K": "v"}
    listed = await alice.call("GET", _secret(path.rsplit("/", 1)[0] + "/", "tree"))
    assert path.rsplit("/", 1)[1] in listed["entries"]
    assert (await alice.call("DELETE", _secret(path)))["deleted"] is True
    await alice.call("GET", _secret(path), expect=404)


async def test_a_secret_value_that_is_not_text(federated: Federated) -> None:
    alice = federated.users["alice"]
    response = await _json(
        federated.http,
        "PUT",
        _secret("user-alice/surrogate"),
        {"data": {"K": "\ud800"}},
        headers=alice.headers(),
    )
    assert response.status_code == 422, response.text
    assert "not valid Unicode text" in response.json()["error"]["message"]
    response = await _json(
        federated.http,
        "POST",
        "/api/storage/buckets/user-alice/share",
        {"key": "a\ud800"},
        headers=alice.headers(),
    )
    assert response.status_code == 422, response.text
