"""Each service has its own origin: a page served by another user's shared service, opened in
the victim's browser (Chromium), reaches nothing of the platform nor of the victim's other
services. Its attempts are counted in the tenancy ledger.

bob shares a service in project-team whose page attacks; alice, a member, opens it while signed
in to the platform, with a service of her own running."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ADMIN_PASSWORD, Ledger
from .conftest import LiveServer, serve, sign_in

pytestmark = [pytest.mark.slow]

CHARTS = Path(__file__).resolve().parents[2] / "fixtures" / "charts"
TEAM = "project-team"
SECRET_PAGE = "alice's confidential page"

#: what bob's page does in alice's browser; each attempt's outcome lands in window.results
ATTACK = """<!doctype html><title>bob's dashboard</title><body>dashboard<script>
const PLATFORM = %(platform)s, VICTIM = %(victim)s;
window.results = {};
async function attempt(name, action) {
  try { window.results[name] = {ok: true, detail: await action()}; }
  catch (error) { window.results[name] = {ok: false, detail: String(error)}; }
}
async function read(url, options) {
  const answer = await fetch(url, {credentials: "include", ...options});
  const text = await answer.text();
  if (!answer.ok) throw new Error(answer.status + " " + text.slice(0, 80));
  return text.slice(0, 200);
}
(async () => {
  await attempt("read the platform's /api/me", () => read(PLATFORM + "/api/me"));
  await attempt("read alice's secrets", () => read(PLATFORM + "/api/secrets/tree"));
  await attempt("create an API token", () => read(PLATFORM + "/api/me/tokens", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({name: "bob-was-here", ttl_days: 3650})}));
  await attempt("blind token creation (no-cors)", async () => {
    await fetch(PLATFORM + "/api/me/tokens", {method: "POST", mode: "no-cors",
      credentials: "include", body: '{"name": "bob-blind"}'});
    throw new Error("opaque: checked on the server");
  });
  await attempt("read alice's own service", () => read(VICTIM));
  await attempt("post to alice's service in her name (no-cors)", async () => {
    await fetch(VICTIM + "bob-was-here", {method: "POST", mode: "no-cors",
      credentials: "include", body: "x"});
    throw new Error("opaque: checked in the service's log");
  });
  await attempt("a WebSocket to alice's service", () => new Promise((resolve, reject) => {
    const socket = new WebSocket(VICTIM.replace("http", "ws") + "ws");
    socket.onopen = () => resolve("open");
    socket.onerror = () => reject(new Error("refused"));
    setTimeout(() => reject(new Error("no answer")), 5000);
  }));
  await attempt("the platform's session cookie", async () => {
    if (document.cookie.includes("datalab")) return document.cookie;
    throw new Error("not visible");
  });
  await attempt("the platform's page in a frame", () => new Promise((resolve, reject) => {
    const frame = document.createElement("iframe");
    frame.src = PLATFORM + "/account";
    frame.onload = () => {
      try { resolve(frame.contentDocument.body.innerText.slice(0, 100)); }
      catch (error) { reject(error); }
    };
    document.body.appendChild(frame);
    setTimeout(() => reject(new Error("no frame")), 5000);
  }));
  window.done = true;
})();
</script></body>"""


@pytest.fixture(scope="module")
def local_server() -> Iterator[LiveServer]:
    if os.geteuid() != 0:
        pytest.skip("per-user service accounts exist only when the platform is root")
    catalogs = [{"id": "test", "name": "Test charts", "location": str(CHARTS)}]
    yield from serve({"backend": {"name": "local"}, "catalogs": catalogs})


def _launch(server: LiveServer, token: str, body: dict[str, Any], project: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "X-Datalab-Project": project}
    answer = httpx.post(server.url + "/api/services", headers=headers, json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        service = httpx.get(f"{server.url}/api/services/{body['name']}", headers=headers).json()
        if service["phase"] == "running":
            return
        assert service["phase"] != "failed", service["reason"]
        time.sleep(0.3)
    raise AssertionError(f"{body['name']} did not start")


def test_a_shared_services_page_reaches_nothing_of_the_victims(
    browser: Any, local_server: LiveServer, ledger: Ledger
) -> None:
    server = local_server
    admin = server.token("admin", ADMIN_PASSWORD)
    for user in ("alice", "bob"):
        server.add_user(user, f"{user}-password-123")
    server.api("POST", "/api/projects", token=admin, json={"name": "team"})
    for user in ("alice", "bob"):  # (the admin who made it is its first member)
        server.api("POST", f"/api/projects/{TEAM}/members", token=admin, json={"user": user})
    alice_token = server.token("alice", "alice-password-123")
    bob_token = server.token("bob", "bob-password-123")
    _launch(
        server,
        alice_token,
        {"catalog": "test", "chart": "file-server", "name": "alice-files",
         "values": {"greeting": SECRET_PAGE}},
        "user-alice",
    )  # fmt: skip
    victim = server.platform.settings.service_url("alice-files")
    attack = ATTACK % {"platform": json.dumps(server.url), "victim": json.dumps(victim)}
    _launch(
        server,
        bob_token,
        {"catalog": "test", "chart": "file-server", "name": "bob-dash", "shared": True,
         "values": {"greeting": attack}},
        TEAM,
    )  # fmt: skip

    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        sign_in(page, server, "alice", "alice-password-123")
        # alice opens her own service: the handshake signs her in at its origin
        page.goto(victim)
        assert page.url == victim and SECRET_PAGE in page.content()
        # /s/<id>/ on the platform's origin is only a way to the service's origin
        page.goto(f"{server.url}/s/alice-files/")
        assert page.url == victim

        # alice opens bob's shared service
        bob_page = server.platform.settings.service_url("bob-dash")
        page.goto(bob_page)
        assert page.url == bob_page
        page.wait_for_function("window.done === true")
        results = page.evaluate("window.results")
        assert len(results) == 9, results
        for name, outcome in results.items():
            ledger.expect_denied("service page in the victim's browser", name, **_outcome(outcome))
        # nothing happened on the platform either
        tokens = server.api("GET", "/api/me/tokens", token=alice_token)
        ledger.expect_denied(
            "service page in the victim's browser",
            "a token created for alice by any request",
            any(t["name"].startswith("bob") for t in tokens),
            str(tokens),
        )
        # the blind request never reached alice's service
        victim_log = httpx.get(
            f"{server.url}/api/services/alice-files/logs",
            headers={"Authorization": f"Bearer {alice_token}"},
        )
        assert victim_log.status_code == 200 and "GET / HTTP" in victim_log.text
        ledger.expect_denied(
            "service page in the victim's browser",
            "a blind POST reaching alice's service",
            "bob-was-here" in victim_log.text,
        )
        # and the service's host never saw the platform's cookies
        log = httpx.get(
            f"{server.url}/api/services/bob-dash/logs",
            headers={"Authorization": f"Bearer {bob_token}", "X-Datalab-Project": TEAM},
        )
        assert log.status_code == 200 and "GET / HTTP" in log.text
        assert "datalab_session" not in log.text and "datalab_service" not in log.text
    finally:
        context.close()
    for name, token, project in (
        ("alice-files", alice_token, "user-alice"),
        ("bob-dash", bob_token, TEAM),
    ):
        httpx.delete(
            f"{server.url}/api/services/{name}",
            headers={"Authorization": f"Bearer {token}", "X-Datalab-Project": project},
        )


def _outcome(outcome: dict[str, Any]) -> dict[str, Any]:
    return {"succeeded": bool(outcome["ok"]), "detail": str(outcome["detail"])[:200]}


def test_signing_out_closes_the_services_too(browser: Any, local_server: LiveServer) -> None:
    server = local_server
    server.add_user("carol", "carol-password-123")
    carol = server.token("carol", "carol-password-123")
    _launch(
        server,
        carol,
        {"catalog": "test", "chart": "file-server", "name": "carol-files",
         "values": {"greeting": "carol's page"}},
        "user-carol",
    )  # fmt: skip
    url = server.platform.settings.service_url("carol-files")
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        sign_in(page, server, "carol", "carol-password-123")
        page.goto(url)
        assert "carol's page" in page.content()
        cookies = {c["name"]: c for c in context.cookies(url)}
        access = cookies["datalab_service"]
        assert access["httpOnly"] and access["domain"] == "carol-files.localhost"
        assert "datalab_session" not in cookies  # the platform's cookie stays on its host
        page.goto(server.url + "/")
        page.locator("form[action='/logout'] button").click()
        page.wait_for_url("**/login")
        # the access cookie (still in the browser) no longer opens the service: sign in again
        page.goto(url)
        assert page.url.startswith(server.url + "/login")
        host = url.split("/")[2]
        replayed = httpx.get(
            server.url + "/",
            headers={"Host": host, "Cookie": f"datalab_service={access['value']}"},
        )
        assert replayed.status_code == 401
    finally:
        context.close()
    httpx.delete(
        f"{server.url}/api/services/carol-files", headers={"Authorization": f"Bearer {carol}"}
    )
