"""Disabling a user leaves them nothing: bob, with a running service holding his Vault token
and S3 refresh token, and a Vault token of his own for tools, is disabled by an admin; then,
from his service account (where his programs run and hold those credentials), he tries them
all. Administrators may stop any user's service; nobody else may."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from datalab.db import Service, User, VaultTokenRecord
from datalab.errors import Conflict, Unauthenticated
from datalab.identity import accounts
from datalab.identity.access import principal_for
from datalab.injection import REFRESH_PATH

from ..conftest import Api
from .conftest import Ledger, Tenancy, launch, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]


def _admin(tenancy: Tenancy) -> Api:
    with tenancy.platform.db.session() as session:
        admin = accounts.get_user(session, accounts.ADMIN_NAME)
        _, token = accounts.create_token(session, admin, "tenancy admin", ttl_days=1)
    return Api(tenancy.http, accounts.ADMIN_NAME, token)


def _vault_tokens_of(tenancy: Tenancy, name: str) -> list[str]:
    with tenancy.platform.db.session() as session:
        return list(
            session.scalars(
                select(VaultTokenRecord.accessor)
                .join(User, VaultTokenRecord.user_id == User.id)
                .where(User.name == name)
            )
        )


def _probes(tenancy: Tenancy, held: dict[str, str], api_token: str) -> list[dict[str, Any]]:
    """What a program holding bob's credentials tries: read his secret and renew each Vault
    token, refresh the service's S3 credentials, call the platform's API."""
    store = tenancy.platform.secret_store
    assert store is not None
    secret = f"{store.address}/v1/{store.mount}/data/user-bob/db"
    renew = f"{store.address}/v1/auth/token/renew-self"
    probes: list[dict[str, Any]] = []
    for which in ("service vault token", "tools vault token"):
        headers = {"X-Vault-Token": held[which]}
        probes.append({"kind": "http", "url": secret, "headers": headers})
        probes.append({"kind": "http", "url": renew, "method": "POST", "headers": headers})
    probes.append(
        {
            "kind": "http",
            "url": tenancy.url + REFRESH_PATH,
            "headers": {"Authorization": held["refresh authorization"]},
        }
    )
    probes.append(
        {
            "kind": "http",
            "url": tenancy.url + "/api/me",
            "headers": {"Authorization": f"Bearer {api_token}"},
        }
    )
    return probes


async def test_a_disabled_user_keeps_nothing_that_works(tenancy: Tenancy, ledger: Ledger) -> None:
    bob, admin = tenancy.users["bob"], _admin(tenancy)
    platform = tenancy.platform
    await bob.call("PUT", "/api/secrets/values/user-bob/db", json={"data": {"PGPASSWORD": "pw"}})
    await launch(bob, "jupyter-python", "bob-nb")
    with platform.db.session() as session:
        row = session.get(Service, "bob-nb")
        assert row is not None
        values = json.loads(json.dumps(row.values))  # what the service's processes hold
    tools = await bob.call("POST", "/api/secrets/token")
    held = {
        "service vault token": values["vault"]["token"],
        "tools vault token": tools["token"],
        "refresh authorization": values["s3"]["credentialsAuthorization"],
    }
    assert len(_vault_tokens_of(tenancy, "bob")) >= 2  # recorded by accessor
    probes = _probes(tenancy, held, bob.token)
    control = await tenancy.run_as("bob", probes)
    assert all(r["succeeded"] for r in control), control  # everything works before

    disabled = await admin.call("POST", "/api/users/bob/disable")
    assert disabled["disabled"] is True

    # from bob's service account: nothing he holds works any more
    results = await tenancy.attack(ledger, "disabled user", "bob", probes)
    assert all(r["detail"].startswith("HTTP 40") for r in results), results
    assert _vault_tokens_of(tenancy, "bob") == []
    # no new Vault token for him, from anywhere
    assert platform.secret_store is not None
    with pytest.raises(Unauthenticated):
        await platform.secret_store.user_token("bob", [])
    ledger.record("disabled user", "mint a Vault token for bob", False)

    # his services are suspended, and stay so
    services = await admin.call("GET", "/api/admin/services", params={"owner": "bob"})
    assert [(s["id"], s["phase"]) for s in services["services"]] == [("bob-nb", "suspended")]
    assert "owner's account was disabled" in services["services"][0]["reason"]
    with platform.db.session() as session:
        user = accounts.get_user(session, "bob")
        bob_id, as_bob = user.id, principal_for(session, user, None, "token")
    try:  # even for a caller the platform still took for bob (a request already under way)
        await platform.services.resume(as_bob, "bob-nb")
        resumed = True
    except Conflict as exc:
        assert "disabled" in exc.message
        resumed = False
    ledger.expect_denied("disabled user", "resume bob's service", resumed)

    # enabled again: nothing of before comes back; a new token works, and his secrets with it
    await admin.call("POST", "/api/users/bob/enable")
    answer = await bob.http.get("/api/me", headers=bob.headers())
    ledger.expect_denied("disabled user", "old API token after enabling", answer.is_success)
    with platform.db.session() as session:
        _, token = accounts.create_token(
            session, session.get_one(User, bob_id), "tests", ttl_days=1
        )
    bob = tenancy.users["bob"] = Api(tenancy.http, "bob", token)
    secret = await bob.call("GET", "/api/secrets/values/user-bob/db")
    assert secret["data"] == {"PGPASSWORD": "pw"}
    again = await tenancy.run_as("bob", probes[:4])  # the old Vault tokens stay revoked
    assert not any(r["succeeded"] for r in again), again
    await bob.call("DELETE", "/api/services/bob-nb")


async def test_admins_stop_any_service_and_nobody_else_does(
    tenancy: Tenancy, ledger: Ledger
) -> None:
    alice, mallory, admin = tenancy.users["alice"], tenancy.users["mallory"], _admin(tenancy)
    await launch(alice, "jupyter-python", "alice-nb")
    listing = await admin.call("GET", "/api/admin/services")
    mine = [s for s in listing["services"] if s["id"] == "alice-nb"]
    assert mine and mine[0]["owner"] == "alice" and mine[0]["project"] == "user-alice"
    for method, path in (
        ("GET", "/api/admin/services"),
        ("POST", "/api/services/alice-nb/suspend"),
        ("DELETE", "/api/services/alice-nb"),
    ):
        answer = await mallory.http.request(method, path, headers=mallory.headers())
        ledger.expect_denied("admin rule", f"mallory {method} {path}", answer.is_success)
    # an administrator sees it (credentials masked, no password) but may not use it
    seen = await admin.call("GET", "/api/services/alice-nb")
    assert seen["owner"] == "alice" and seen["password"] is None
    assert seen["values"]["vault"]["token"] == "********"
    assert seen["commands"]["suspend"]["datalab"] == "datalab suspend alice-nb --project user-admin"
    logs = await admin.http.get("/api/services/alice-nb/logs", headers=admin.headers())
    ledger.expect_denied("admin rule", "admin reads alice's logs", logs.is_success)
    suspended = await admin.call("POST", "/api/services/alice-nb/suspend")
    assert suspended["phase"] == "suspended"
    assert (await alice.call("GET", "/api/services/alice-nb"))["phase"] == "suspended"
    await admin.call("DELETE", "/api/services/alice-nb")
    await alice.call("GET", "/api/services/alice-nb", expect=404)
