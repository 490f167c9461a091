"""Every API operation that names a resource, tried by other users on alice's resources: her
services (personal and in a project without them), objects, secrets, saved configuration, API
token, account and project, with every project header they might try. None may answer 2xx,
and afterwards alice's resources are intact."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import PRIVATE, TEAM, Ledger, Tenancy, launch, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/services/{service_id}"): {"json": {"shared": True, "name": "pwned"}},
    ("PUT", "/api/storage/buckets/{bucket}/objects/{key}"): {"content": b"pwned"},
    ("POST", "/api/storage/buckets/{bucket}/share"): {"json": {"key": "report.csv"}},
    ("PUT", "/api/storage/buckets/{bucket}/public"): {"json": {"prefix": "", "public": True}},
    ("PUT", "/api/secrets/values/{path}"): {"json": {"data": {"PASSWORD": "pwned"}}},
    ("POST", "/api/projects/{project_id}/members"): {"json": {"user": "mallory", "role": "admin"}},
    ("POST", "/api/users/{name}/reset-password"): {"json": {}},
}


def _targets(param: str, ids: dict[str, Any]) -> list[str]:
    return {
        "service_id": ["alice-svc", "private-svc"],
        "bucket": ["user-alice", PRIVATE],
        "key": ["report.csv"],
        "path": ["user-alice/db", f"{PRIVATE}/db"],
        "config_id": [str(ids["config"])],
        "token_id": [str(ids["token"])],
        "name": ["alice"],
        "user": ["alice"],
        "project_id": [PRIVATE],
    }[param]


def _expand(route: str, ids: dict[str, Any]) -> list[str]:
    paths = [route]
    for param in re.findall(r"\{(\w+)\}", route):
        paths = [p.replace(f"{{{param}}}", v) for p in paths for v in _targets(param, ids)]
    return paths


async def test_no_api_operation_reaches_another_users_resources(
    tenancy: Tenancy, ledger: Ledger
) -> None:
    alice = tenancy.users["alice"]
    await launch(alice, "file-server", "alice-svc", catalog="test")
    await launch(alice, "file-server", "private-svc", catalog="test", project=PRIVATE)
    project: str | None  # a project header; None: the user's personal project
    for project in ("user-alice", PRIVATE):
        await alice.call(
            "PUT",
            f"/api/storage/buckets/{project}/objects/report.csv",
            content=b"confidential",
            project=project,
        )
        await alice.call(
            "PUT",
            f"/api/secrets/values/{project}/db",
            json={"data": {"PASSWORD": "alice-secret"}},
            project=project,
        )
    config = await alice.call(
        "POST", "/api/saved-configs", json={"name": "mine", "chart": "jupyter-python"}
    )
    tokens = await alice.call("GET", "/api/me/tokens")
    ids = {"config": config["id"], "token": tokens[0]["id"]}

    openapi = tenancy.app.openapi()
    attempts = 0
    for route, operations in openapi["paths"].items():
        if "{" not in route or route.startswith("/api/catalogs"):  # the catalog is everyone's
            continue
        for method in (m.upper() for m in operations):
            for path in _expand(route, ids):
                for attacker, projects in (
                    ("mallory", (None, "user-alice", PRIVATE, TEAM)),
                    ("bob", (None, TEAM, PRIVATE)),
                ):
                    api = tenancy.users[attacker]
                    for project in projects:
                        answer = await api.http.request(
                            method,
                            path,
                            headers=api.headers(project),
                            **BODIES.get((method, route), {}),
                        )
                        attempts += 1
                        ledger.expect_denied(
                            "API on another user's resources",
                            f"{attacker} {method} {path} in {project}",
                            answer.is_success,
                            f"{answer.status_code} {answer.text[:100]}",
                        )
    assert attempts > 300

    # alice's resources are intact
    for service, project in (("alice-svc", None), ("private-svc", PRIVATE)):
        answer = await alice.call("GET", f"/api/services/{service}", project=project)
        assert answer["phase"] == "running" and not answer["shared"]
    for project in ("user-alice", PRIVATE):
        body = await alice.http.get(
            f"/api/storage/buckets/{project}/objects/report.csv", headers=alice.headers(project)
        )
        assert body.content == b"confidential"
        secret = await alice.call("GET", f"/api/secrets/values/{project}/db", project=project)
        assert secret["data"] == {"PASSWORD": "alice-secret"}
    assert [c["name"] for c in await alice.call("GET", "/api/saved-configs")] == ["mine"]
    assert await alice.call("GET", "/api/me")  # her token still works
    members = await alice.call("GET", "/api/projects")
    private = next(p for p in members if p["id"] == PRIVATE)
    assert [m["user"] for m in private["members"]] == ["alice"]
    for service, project in (("alice-svc", None), ("private-svc", PRIVATE)):
        await alice.call("DELETE", f"/api/services/{service}", project=project)
    await alice.call("DELETE", f"/api/saved-configs/{config['id']}", expect=204)
