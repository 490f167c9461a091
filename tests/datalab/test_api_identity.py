"""Authentication, sessions, CSRF, tokens, brute-force protection, users and projects."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from datalab.backends.memory import MemoryBackend
from datalab.config import Settings
from datalab.db import ApiToken
from datalab.identity import accounts

from .conftest import ADMIN_PASSWORD, Env

pytestmark = pytest.mark.anyio

PUBLIC = {
    ("GET", "/api/health"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/token"),
    ("POST", "/api/auth/logout"),
    # sign-in through an external identity provider (tests/datalab/identity/test_oidc_login.py)
    ("GET", "/api/auth/oidc/login"),
    ("GET", "/api/auth/oidc/callback"),
}
#: for browsers: not signed in, they are sent to the sign-in page (nothing else happens)
SIGN_IN_FIRST = {("GET", "/api/services/{service_id}/open")}


async def test_health_needs_no_authentication(env: Env) -> None:
    response = await env.http.get("/api/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_every_other_route_requires_authentication(env: Env) -> None:
    checked = 0
    for route, operations in env.app.openapi()["paths"].items():
        for method in (m.upper() for m in operations):
            if (method, route) in PUBLIC:
                continue
            path = re.sub(r"\{[^}]+\}", "x", route)
            response = await env.http.request(method, path, json={})
            if (method, route) in SIGN_IN_FIRST:
                assert response.status_code == 302, (method, route, response.text)
                assert response.headers["location"].startswith("/login?next=")
                continue
            assert response.status_code == 401, (method, route, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            checked += 1
    assert checked >= 20


async def test_openapi_schema_is_published(env: Env) -> None:
    schema = (await env.http.get("/api/openapi.json")).json()
    assert "/api/services" in schema["paths"]
    assert "/api/catalogs/{catalog_id}/charts/{chart}/values" in schema["paths"]


async def test_openapi_schema_describes_catalogs_and_charts(env: Env) -> None:
    schema = (await env.http.get("/api/openapi.json")).json()
    models = schema["components"]["schemas"]

    def answer(path: str) -> dict[str, object]:
        found: dict[str, object] = schema["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        return found

    assert answer("/api/catalogs")["items"] == {"$ref": "#/components/schemas/CatalogListing"}
    assert answer("/api/catalogs/{catalog_id}") == {"$ref": "#/components/schemas/CatalogListing"}
    assert answer("/api/catalogs/{catalog_id}/charts/{chart}") == {
        "$ref": "#/components/schemas/ChartPage"
    }
    assert answer("/api/catalogs/{catalog_id}/charts/{chart}/values") == {
        "$ref": "#/components/schemas/ResolvedDefaults"
    }
    catalog = models["CatalogListing"]["properties"]
    assert {"id", "name", "translations", "type", "charts", "broken", "loaded_at"} <= set(catalog)
    assert catalog["charts"]["items"] == {"$ref": "#/components/schemas/ChartSummary"}
    assert catalog["broken"]["items"] == {"$ref": "#/components/schemas/BrokenChartOut"}
    assert set(models["BrokenChartOut"]["properties"]) == {"name", "version", "reason"}
    summary = set(models["ChartSummary"]["properties"])
    assert {"catalog_id", "name", "version", "versions", "has_icon", "runs_locally"} <= summary
    page = set(models["ChartPage"]["properties"])
    assert summary | {"readme", "notes", "values", "schema", "local_recipe", "digest"} == page
    values = models["ResolvedDefaults"]["properties"]
    assert set(values) == {"catalog", "chart", "version", "values", "schema"}
    assert values["values"]["type"] == values["schema"]["type"] == "object"  # free-form JSON


async def test_web_session_cookie_flags_and_csrf(env: Env) -> None:
    response = await env.http.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    csrf = response.json()["csrf_token"]
    me = await env.http.get("/api/me")
    assert me.status_code == 200 and me.json()["name"] == "admin"
    # state-changing request with the cookie but without the CSRF header is refused
    refused = await env.http.post("/api/me/tokens", json={"name": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    accepted = await env.http.post(
        "/api/me/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}
    )
    assert accepted.status_code == 201
    await env.http.post("/api/auth/logout")
    assert (await env.http.get("/api/me")).status_code == 401


async def test_brute_force_is_throttled(env: Env) -> None:
    for _ in range(5):
        bad = await env.http.post("/api/auth/login", json={"username": "admin", "password": "no"})
        assert bad.status_code == 401
    locked = await env.http.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "too many failed sign-ins" in locked.json()["error"]["message"]


async def test_wrong_password_does_not_say_which_part_was_wrong(env: Env) -> None:
    for username in ("admin", "nobody"):
        response = await env.http.post(
            "/api/auth/login", json={"username": username, "password": "wrong-password"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith("wrong user name or password")


async def test_token_lifecycle(env: Env) -> None:
    response = await env.http.post(
        "/api/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 201
    token = response.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await env.http.get("/api/me", headers=headers)).status_code == 200
    tokens = await env.admin.call("GET", "/api/me/tokens")
    token_id = next(t["id"] for t in tokens if t["prefix"] == token[:10])
    assert all("token" not in t for t in tokens)  # never shown again
    await env.admin.call("DELETE", f"/api/me/tokens/{token_id}", expect=204)
    revoked = await env.http.get("/api/me", headers=headers)
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["error"]["message"]


async def test_expired_and_malformed_tokens(env: Env) -> None:
    alice = await env.user("alice")
    with env.platform.db.session() as session:
        for token in session.query(ApiToken).all():
            token.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    expired = await env.http.get("/api/me", headers=alice.headers())
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    for header in ("Bearer", "Basic abc", "Bearer dlb_unknown-token-value-000000000"):
        response = await env.http.get("/api/me", headers={"Authorization": header})
        assert response.status_code == 401, header


async def test_users_admin_only_and_disable_revokes(env: Env) -> None:
    alice = await env.user("alice")
    await alice.call("GET", "/api/users", expect=403)
    await alice.call("POST", "/api/users", json={"name": "mallory"}, expect=403)
    created = await env.admin.call("POST", "/api/users", json={"name": "bob"}, expect=201)
    assert len(created["password"]) >= 10  # generated, shown once
    names = [u["name"] for u in await env.admin.call("GET", "/api/users")]
    assert names == ["admin", "alice", "bob"]
    await env.admin.call("POST", "/api/users/alice/disable")
    await alice.call("GET", "/api/me", expect=401)
    login = await env.http.post(
        "/api/auth/login", json={"username": "alice", "password": "alice-password-123"}
    )
    assert login.status_code == 401
    await env.admin.call("POST", "/api/users/admin/disable", expect=422)


async def test_reset_password(env: Env) -> None:
    await env.user("alice")
    result = await env.admin.call("POST", "/api/users/alice/reset-password", json={})
    new = result["password"]
    ok = await env.http.post("/api/auth/login", json={"username": "alice", "password": new})
    assert ok.status_code == 200
    await env.admin.call("POST", "/api/users/nobody/reset-password", json={}, expect=404)
    short = await env.admin.call(
        "POST", "/api/users/alice/reset-password", json={"password": "short"}, expect=422
    )
    assert "at least 10 characters" in short["error"]["message"]


@pytest.mark.parametrize("name", ["Alice", "-bob", "a_b", "x" * 70, "", "admin-api"])
async def test_user_names_must_be_rfc1123(env: Env, name: str) -> None:
    response = await env.admin.call("POST", "/api/users", json={"name": name}, expect=422)
    assert "name" in response["error"]["message"]


async def test_projects_and_membership(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    me = await alice.call("GET", "/api/me")
    assert me["project"] == "user-alice"
    project = await env.admin.call("POST", "/api/projects", json={"name": "sandbox"}, expect=201)
    assert project["id"] == "project-sandbox"
    # its creator is its admin member, so they can act in it at once
    assert project["members"] == [{"user": "admin", "role": "admin"}]
    as_admin = await env.admin.call("GET", "/api/me", project="project-sandbox")
    assert as_admin["project_role"] == "admin"
    await alice.call("POST", "/api/projects", json={"name": "x"}, expect=403)
    await alice.call("GET", "/api/me", project="project-sandbox", expect=403)
    await env.admin.call("POST", "/api/projects/project-sandbox/members", json={"user": "alice"})
    assert (await alice.call("GET", "/api/me", project="project-sandbox"))["project"] == (
        "project-sandbox"
    )
    await bob.call("GET", "/api/me", project="project-sandbox", expect=403)
    await bob.call("GET", "/api/me", project="user-alice", expect=403)
    await alice.call("GET", "/api/me", project="project-nope", expect=404)
    mine = await alice.call("GET", "/api/projects")
    assert {p["id"] for p in mine} == {"user-alice", "project-sandbox"}
    await env.admin.call(
        "POST", "/api/projects/user-alice/members", json={"user": "bob"}, expect=422
    )
    await env.admin.call("DELETE", "/api/projects/project-sandbox/members/alice", expect=204)
    await alice.call("GET", "/api/me", project="project-sandbox", expect=403)


async def test_bad_requests_get_clear_4xx(env: Env) -> None:
    response = await env.http.post(
        "/api/users",
        content=b"{not json",
        headers={**env.admin.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    unknown = await env.admin.call(
        "POST", "/api/users", json={"name": "carol", "colour": "red"}, expect=422
    )
    assert "colour" in unknown["error"]["message"]
    huge = await env.http.post(
        "/api/users", content=b"x" * (11 * 1024 * 1024), headers=env.admin.headers()
    )
    assert huge.status_code == 413
    assert "larger than" in huge.json()["error"]["message"]
    missing = await env.http.get("/api/nothing-here", headers=env.admin.headers())
    assert missing.status_code == 404


def test_first_admin_password_created_once(settings: Settings) -> None:
    from datalab.platform import Platform

    platform = Platform.create(settings)
    assert platform.ensure_admin() == ADMIN_PASSWORD
    assert platform.ensure_admin() is None
    with platform.db.session() as session:
        assert accounts.authenticate(session, "admin", ADMIN_PASSWORD) is not None
    platform.db.dispose()


async def test_the_backend_is_told_each_projects_members(env: Env) -> None:
    """What the Kubernetes backend turns into RoleBindings: enabled members only, at once."""
    backend = env.platform.backend
    assert isinstance(backend, MemoryBackend)  # the API tests' backend
    told = backend.project_members
    await env.user("alice")
    await env.admin.call("POST", "/api/projects", json={"name": "team"}, expect=201)
    await env.admin.call("POST", "/api/projects/project-team/members", json={"user": "alice"})
    assert told["project-team"] == ["admin", "alice"]
    await env.admin.call("POST", "/api/users/alice/disable")
    assert told["project-team"] == ["admin"] and told["user-alice"] == []
    await env.admin.call("POST", "/api/users/alice/enable")
    assert told["project-team"] == ["admin", "alice"] and told["user-alice"] == ["alice"]
    await env.admin.call("DELETE", "/api/projects/project-team/members/alice", expect=204)
    assert told["project-team"] == ["admin"]
    # and every project at start
    told.clear()
    await env.platform.services.sync_projects()
    assert told == {"project-team": ["admin"], "user-admin": ["admin"], "user-alice": ["alice"]}


async def test_orphans_are_reported_to_admins_and_never_deleted(env: Env) -> None:
    """What the backend runs with no record in the platform (a restored database, say)."""
    from datalab.backends.base import ServiceSpec

    backend = env.platform.backend
    assert await env.admin.call("GET", "/api/admin/orphans") == {
        "backend": "memory",
        "orphans": [],
    }
    stray = ServiceSpec(
        id="stray-1",
        owner="ghost",
        project="user-ghost",
        catalog_id="x",
        chart_name="x",
        chart_version="0",
        chart_dir=env.platform.settings.data_dir,
        values={},
        namespace="user-ghost",
    )
    await backend.install(stray)
    answer = await env.admin.call("GET", "/api/admin/orphans")
    assert answer["orphans"] == ["stray-1"]
    assert await backend.list() == ["stray-1"]  # reported, not deleted
    alice = await env.user("alice")
    await alice.call("GET", "/api/admin/orphans", expect=403)
