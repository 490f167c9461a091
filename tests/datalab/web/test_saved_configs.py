"""Saved launch configurations (API used by the launcher and the home page)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from ..conftest import Env


@pytest.mark.anyio
async def test_save_list_replace_delete(env: Env) -> None:
    alice = await env.user("alice")
    bob = await env.user("bob")
    body = {
        "name": "big notebook",
        "chart": "jupyter-python",
        "values": {
            "resources": {"limits": {"cpu": "3000m"}},
            "persistence": {"enabled": False},
            "security": {"password": "typed-by-me-123"},
        },
    }
    saved = await alice.call("POST", "/api/saved-configs", json=body)
    assert saved["values"] == {  # the password is not saved
        "resources": {"limits": {"cpu": "3000m"}},
        "persistence": {"enabled": False},
    }
    url = urlsplit(saved["launcher_url"])
    assert url.path == "/launcher/datalab/jupyter-python"
    assert ("resources.limits.cpu", "3000m") in parse_qsl(url.query)
    assert ("persistence.enabled", "false") in parse_qsl(url.query)

    again = await alice.call("POST", "/api/saved-configs", json={**body, "values": {}})
    assert again["id"] == saved["id"] and again["values"] == {}
    assert [c["name"] for c in await alice.call("GET", "/api/saved-configs")] == ["big notebook"]
    assert await bob.call("GET", "/api/saved-configs") == []
    await bob.call("DELETE", f"/api/saved-configs/{saved['id']}", expect=404)
    await alice.call("DELETE", f"/api/saved-configs/{saved['id']}", expect=204)
    assert await alice.call("GET", "/api/saved-configs") == []


@pytest.mark.anyio
async def test_bad_configurations_are_refused_like_launches(env: Env) -> None:
    alice = await env.user("alice")
    bad = await env.http.post(
        "/api/saved-configs",
        headers=alice.headers(),
        json={"name": "x", "chart": "jupyter-python", "values": {"resources": {"limits": 3}}},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["path"] == "resources.limits"
    missing = await env.http.post(
        "/api/saved-configs", headers=alice.headers(), json={"name": "x", "chart": "nope"}
    )
    assert missing.status_code == 404
    empty = await env.http.post(
        "/api/saved-configs", headers=alice.headers(), json={"name": "", "chart": "mlflow"}
    )
    assert empty.status_code == 422


@pytest.mark.anyio
async def test_home_lists_saved_configurations(env: Env) -> None:
    from .test_pages import sign_in

    alice = await env.user("alice")
    await alice.call(
        "POST",
        "/api/saved-configs",
        json={"name": "<b>tracking</b>", "chart": "mlflow", "values": {}},
    )
    http = httpx.AsyncClient(transport=env.http._transport, base_url="http://testserver")
    await sign_in(http, "alice", "alice-password-123")
    home = (await http.get("/")).text
    assert "&lt;b&gt;tracking&lt;/b&gt;" in home and 'href="/launcher/datalab/mlflow"' in home


def test_writes_are_committed_before_the_response() -> None:
    """The web UI reloads a page right after an API write: the database session must commit
    before the response leaves (FastAPI ends yield dependencies after it by default)."""
    from typing import get_args

    from datalab.http.deps import SessionDep

    assert get_args(SessionDep)[1].scope == "function"
