"""The gateway in front of services' own origins (datalab.gateway), through the real app: the
host routing, the access handshake and its one-time codes, the access cookie and what may
carry it. Services run nowhere here (the memory backend): a request the gateway lets through
gets 503 "not running", one it refuses never gets that far."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from datalab.gateway import ServiceGateway, safe_next

from .conftest import Env

pytestmark = pytest.mark.anyio

HOST = "nb.localhost:8000"  # the service's host with the default settings


def _browser(env: Env) -> httpx.AsyncClient:
    """A browser: it keeps cookies (the platform's session; an access cookie per host)."""
    transport = httpx.ASGITransport(app=env.app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


async def _sign_in(browser: httpx.AsyncClient, name: str) -> None:
    answer = await browser.post(
        "/api/auth/login", json={"username": name, "password": f"{name}-password-123"}
    )
    assert answer.status_code == 200, answer.text


async def _handshake(browser: httpx.AsyncClient, service: str, next_path: str = "/lab") -> str:
    """Open the service as a browser would; returns the access cookie's value."""
    opened = await browser.get(f"/api/services/{service}/open", params={"next": next_path})
    assert opened.status_code == 302, opened.text
    target = urlsplit(opened.headers["location"])
    assert target.netloc == f"{service}.localhost:8000" and target.path == "/_datalab/authorize"
    back = await browser.get(f"{target.path}?{target.query}", headers={"Host": target.netloc})
    assert back.status_code == 302 and back.headers["location"] == next_path
    cookie = back.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie  # host-only
    return cookie.split(";")[0].split("=", 1)[1]


async def test_the_handshake_and_the_access_cookie(env: Env) -> None:
    alice = await env.user("alice")
    await alice.call("POST", "/api/services", json={"chart": "jupyter-python", "name": "nb"})
    await env.user("mallory")
    async with _browser(env) as mallory:  # may not use alice's service: as if it did not exist
        await _sign_in(mallory, "mallory")
        assert (await mallory.get("/api/services/nb/open")).status_code == 404
    async with _browser(env) as alice_browser:
        await _sign_in(alice_browser, "alice")
        access = await _handshake(alice_browser, "nb")
        headers = {"Host": HOST, "Cookie": f"datalab_service={access}"}
        # let through (the memory backend runs nothing: 503), as a browser of the same origin
        assert (await env.http.get("/lab", headers=headers)).status_code == 503
        same_origin = {**headers, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        assert (await env.http.post("/api/x", headers=same_origin)).status_code == 503
        # a page of another site (another service of the domain) using the cookie: refused
        for site in ("same-site", "cross-site"):
            for mode, dest, method in (
                ("cors", "empty", "POST"),
                ("no-cors", "empty", "POST"),
                ("websocket", "websocket", "GET"),
                ("navigate", "iframe", "GET"),
            ):
                fetch = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}
                answer = await env.http.request(method, "/api/x", headers={**headers, **fetch})
                assert answer.status_code == 403, (site, mode, dest)
        # a link from another site is a top-level navigation: allowed
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
        link["Sec-Fetch-Dest"] = "document"
        assert (await env.http.get("/lab", headers={**headers, **link})).status_code == 503
        # the cookie is the service's: another service's host does not take it
        other = {"Host": "other.localhost:8000", "Cookie": f"datalab_service={access}"}
        assert (await env.http.get("/", headers=other)).status_code == 401
        # a forged cookie is nobody
        forged = {"Host": HOST, "Cookie": "datalab_service=eyJ1aWQiOjF9.forged"}
        assert (await env.http.get("/api/x", headers=forged)).status_code == 401
        # signing out ends it
        assert (await alice_browser.post("/api/auth/logout")).status_code == 204
        assert (await env.http.get("/lab", headers=headers)).status_code == 401


async def test_one_time_codes(env: Env) -> None:
    alice = await env.user("alice")
    for name in ("nb", "other"):
        await alice.call("POST", "/api/services", json={"chart": "jupyter-python", "name": name})
    async with _browser(env) as browser:
        await _sign_in(browser, "alice")
        opened = await browser.get("/api/services/nb/open", params={"next": "/lab"})
        target = urlsplit(opened.headers["location"])
        code_url = f"{target.path}?{target.query}"
        # a code is for its service only, and is used once
        wrong = await browser.get(code_url, headers={"Host": "other.localhost:8000"})
        assert wrong.status_code == 400 and "set-cookie" not in wrong.headers
        again = await browser.get("/api/services/nb/open", params={"next": "/lab"})
        target = urlsplit(again.headers["location"])
        code_url = f"{target.path}?{target.query}"
        assert (await browser.get(code_url, headers={"Host": HOST})).status_code == 302
        replayed = await browser.get(code_url, headers={"Host": HOST})
        assert replayed.status_code == 400 and "set-cookie" not in replayed.headers
        assert (await browser.get(HANDSHAKE_NO_CODE, headers={"Host": HOST})).status_code == 400
        # where it sends the browser is a path on the service's host, never another site
        for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            opened = await browser.get("/api/services/nb/open", params={"next": evil})
            query = parse_qs(urlsplit(opened.headers["location"]).query)
            assert query["next"] == ["/"]


HANDSHAKE_NO_CODE = "/_datalab/authorize?code=made-up&next=/"


async def test_not_signed_in(env: Env) -> None:
    # a browser with no session: to the sign-in page, then back to open the service
    opened = await env.http.get("/api/services/nb/open", params={"next": "/lab"})
    assert opened.status_code == 302
    assert opened.headers["location"].startswith("/login?next=%2Fapi%2Fservices%2Fnb%2Fopen")
    # at the service's host: a page load goes to the platform, a script or program gets 401
    page = await env.http.get("/lab?x=1", headers={"Host": HOST, "Accept": "text/html"})
    assert page.status_code == 302
    assert page.headers["location"] == (
        "http://127.0.0.1:8000/api/services/nb/open?next=%2Flab%3Fx%3D1"
    )
    assert (await env.http.get("/api/contents", headers={"Host": HOST})).status_code == 401
    # the platform's own pages are not served on a service's host
    assert (await env.http.get("/api/me", headers={"Host": HOST})).status_code == 401


async def test_hosts_and_next(env: Env) -> None:
    gateway: ServiceGateway = env.app.state.gateway
    assert gateway.service_of_host("nb.localhost:8000") == "nb"
    assert gateway.service_of_host("NB.LOCALHOST") == "nb"
    for platform_or_nothing in (
        "127.0.0.1:8000",
        "localhost:8000",
        "a.b.localhost",  # not a service id
        "-x.localhost",
        "nb.localhost.evil.example",
        "",
    ):
        assert gateway.service_of_host(platform_or_nothing) is None, platform_or_nothing
    assert safe_next("/lab?x=1") == "/lab?x=1"
    for evil in ("//evil", "https://evil", "/\\evil", "lab"):
        assert safe_next(evil) == "/"
