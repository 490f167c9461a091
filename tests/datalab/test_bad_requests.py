"""A bad client against the API (issue 14, items 10 and 11): every request it can make gets a
clear 4xx naming the problem, never a 500, a traceback or a blown-up server."""

from __future__ import annotations

import resource
import time
from collections.abc import AsyncIterator

import pytest

from .conftest import Env

pytestmark = pytest.mark.anyio

#: the classic "billion laughs": 9 levels of 9 aliases, 341 bytes that expand to 9^9 strings
BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]"
            for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("dry_run", [True, False])
async def test_a_yaml_alias_bomb_is_refused(env: Env, dry_run: bool) -> None:
    alice = await env.user("alice")
    rss, started = _max_rss_mb(), time.monotonic()
    response = await env.http.post(
        "/api/services",
        json={"chart": "jupyter-python", "values_yaml": BILLION_LAUGHS, "dry_run": dry_run},
        headers=alice.headers(),
    )
    assert time.monotonic() - started < 2
    assert _max_rss_mb() - rss < 50
    assert response.status_code == 422, response.text[:1000]
    message = response.json()["error"]["message"]
    assert "YAML alias *a at line 2" in message
    assert "write the values out in full" in message
    assert len(response.content) < 5000


async def test_yaml_without_aliases_still_loads(env: Env) -> None:
    alice = await env.user("alice")
    values_yaml = "# an anchor without an alias is harmless\nservice: &s\n  image: {}\n"
    response = await env.http.post(
        "/api/services",
        json={"chart": "jupyter-python", "values_yaml": values_yaml, "dry_run": True},
        headers=alice.headers(),
    )
    assert response.status_code in (200, 422), response.text
    assert "alias" not in response.text


async def test_deeply_nested_yaml_is_refused(env: Env) -> None:
    alice = await env.user("alice")
    response = await env.http.post(
        "/api/services",
        json={"chart": "jupyter-python", "values_yaml": "a: " + "[" * 50_000, "dry_run": True},
        headers=alice.headers(),
    )
    assert response.status_code == 422, response.text[:1000]
    assert "nested too deeply" in response.json()["error"]["message"]


async def test_a_copied_session_cookie_stops_working_at_logout(env: Env) -> None:
    await env.user("alice")
    signed_in = await env.http.post(
        "/api/auth/login", json={"username": "alice", "password": "alice-password-123"}
    )
    assert signed_in.status_code == 200
    csrf = signed_in.json()["csrf_token"]
    copied = env.http.cookies["datalab_session"]  # what an attacker copies from the browser
    assert (await env.http.get("/api/me")).status_code == 200
    out = await env.http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    env.http.cookies.clear()
    replayed = await env.http.get("/api/me", headers={"Cookie": f"datalab_session={copied}"})
    assert replayed.status_code == 401, replayed.text
    assert "session has ended" in replayed.json()["error"]["message"]
    # a request that authenticates nothing does not revive it either
    await env.http.get("/api/health", headers={"Cookie": f"datalab_session={copied}"})
    again = await env.http.get("/api/me", headers={"Cookie": f"datalab_session={copied}"})
    assert again.status_code == 401


async def test_the_web_sign_out_ends_the_session_on_the_server(env: Env) -> None:
    await env.user("alice")
    signed_in = await env.http.post(
        "/api/auth/login", json={"username": "alice", "password": "alice-password-123"}
    )
    csrf = signed_in.json()["csrf_token"]
    copied = env.http.cookies["datalab_session"]
    out = await env.http.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 303
    env.http.cookies.clear()
    page = await env.http.get("/", headers={"Cookie": f"datalab_session={copied}"})
    assert page.status_code in (302, 303) and "/login" in page.headers["location"]
    api = await env.http.get("/api/me", headers={"Cookie": f"datalab_session={copied}"})
    assert api.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("DELETE", f"/api/me/tokens/{10**30}", 422, "token_id"),
        ("DELETE", f"/api/me/tokens/{2**63}", 422, "token_id"),
        ("DELETE", f"/api/saved-configs/{10**30}", 422, "config_id"),
        ("POST", "/api/envs/prune?older_than_days=6.5e307", 422, "older_than_days"),
        ("POST", "/api/envs/prune?older_than_days=inf", 422, "older_than_days"),
    ],
)
async def test_numbers_out_of_range_are_invalid(
    env: Env, method: str, path: str, status: int, fragment: str
) -> None:
    response = await env.http.request(method, path, headers=env.admin.headers())
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize("before_id", [10**30, 2**63, -(10**30), 0])
async def test_audit_pages_from_any_id(env: Env, before_id: int) -> None:
    await env.admin.call("POST", "/api/auth/logout", expect=204)  # one entry at least
    page = await env.admin.call("GET", "/api/audit", params={"before_id": before_id})
    assert bool(page["entries"]) is (before_id > 0)


async def test_a_chunked_body_over_the_limit_is_413(env: Env) -> None:
    limit = env.platform.settings.server.max_request_bytes

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    response = await env.http.post("/api/users", content=chunks(), headers=env.admin.headers())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "server.max_request_bytes" in response.json()["error"]["message"]


async def test_a_chunked_body_under_the_limit_is_read(env: Env) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "chunky", '
        yield b'"email": "chunky@example.org"}'

    headers = {**env.admin.headers(), "Content-Type": "application/json"}
    response = await env.http.post("/api/users", content=chunks(), headers=headers)
    assert response.status_code == 201, response.text
