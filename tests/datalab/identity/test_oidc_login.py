"""Sign-in with a real OpenID Connect provider run by the test on loopback (PyPI
oidc-provider-mock): authorization code flow with PKCE, claims → user and group projects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from datalab.app import create_app
from datalab.config import OidcSettings, load_settings
from datalab.identity.oidc import projects_for_groups, s256_challenge, to_label
from datalab.platform import Platform

from ..conftest import oidc_sign_in

pytestmark = pytest.mark.anyio


@pytest.fixture
async def platform(
    tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("DATALAB_ADMIN_PASSWORD", "admin-password-for-tests")
    settings = load_settings(
        None,
        data_dir=tmp_path / "data",
        backend={"name": "memory"},
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
        oidc={
            "enabled": True,
            "issuer_url": provider,
            "client_id": "datalab",
            "client_secret": "any-secret",
            "scopes": "openid profile email",
            "group_include": ["stats-.*", "/team-.*", "admins"],
            "group_exclude": ["stats-secret"],
            "admin_groups": ["admins"],
        },
    )
    platform = Platform.create(settings)
    platform.ensure_admin()
    app = create_app(platform)
    await platform.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await platform.stop()


async def test_sign_in_creates_the_user_and_group_projects(
    platform: httpx.AsyncClient, provider: str
) -> None:
    claims = {
        "preferred_username": "Jeanne.Dupont",
        "email": "jeanne@example.org",
        "groups": ["stats-emploi", "/team-Naf Codes", "stats-secret", "other", "admins"],
    }
    assert await oidc_sign_in(platform, provider, "jeanne-sub", claims) == "/services"
    me = (await platform.get("/api/me")).json()
    assert me["name"] == "jeanne-dupont" and me["is_admin"] is True
    projects = {p["id"] for p in me["projects"]}
    assert projects == {
        "user-jeanne-dupont",
        "project-stats-emploi",
        "project-team-naf-codes",
        "project-admins",
    }
    # next sign-in: groups changed, memberships follow
    platform.cookies.clear()
    claims["groups"] = ["stats-emploi"]
    await oidc_sign_in(platform, provider, "jeanne-sub", claims)
    me = (await platform.get("/api/me")).json()
    assert {p["id"] for p in me["projects"]} == {"user-jeanne-dupont", "project-stats-emploi"}
    assert me["is_admin"] is False


async def test_callback_refuses_forged_or_replayed_state(
    platform: httpx.AsyncClient, provider: str
) -> None:
    refused = await platform.get("/api/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert refused.status_code == 401 and "start again" in refused.json()["error"]["message"]
    start = await platform.get("/api/auth/oidc/login")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    forged = await platform.get("/api/auth/oidc/callback", params={"code": "x", "state": state})
    assert forged.status_code == 401  # the code is not the provider's
    denied = await platform.get("/api/auth/oidc/callback", params={"error": "access_denied"})
    assert denied.status_code == 401


async def test_a_local_account_is_not_taken_over(
    platform: httpx.AsyncClient, provider: str
) -> None:
    # the first admin is the local account "admin": a provider user called admin must not get it
    async with httpx.AsyncClient() as browser:
        await browser.put(f"{provider}/users/evil", json={"preferred_username": "admin"})
        start = await platform.get("/api/auth/oidc/login")
        consent = await browser.post(start.headers["location"], data={"sub": "evil"})
    back = urlsplit(consent.headers["location"])
    refused = await platform.get(f"{back.path}?{back.query}")
    assert refused.status_code == 403 and "local account" in refused.json()["error"]["message"]


def test_pkce_challenge_matches_rfc7636_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_group_mapping_rules() -> None:
    settings = OidcSettings(
        group_include=["insee/.*"],
        group_exclude=["insee/private-.*"],
        group_pattern="^insee/(.*)$",
        group_replacement="\\1",
    )
    groups = ["insee/Stat_Team", "insee/private-x", "other/team", "insee/"]
    assert projects_for_groups(groups, settings) == ["stat-team"]
    assert to_label("Jean Dupont@INSEE.fr") == "jean-dupont-insee-fr"


async def test_not_configured_is_a_clear_404(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        backend={"name": "memory"},
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
    )
    platform = Platform.create(settings)
    transport = httpx.ASGITransport(app=create_app(platform, manage_lifecycle=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answer = await http.get("/api/auth/oidc/login")
    platform.db.dispose()
    assert answer.status_code == 404 and "oidc.enabled" in answer.json()["error"]["message"]
