"""The secrets API against the real embedded OpenBao: a KV tree per user and per project, read
and written with the caller's own Vault token; values never in logs or errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from datalab.db import VaultTokenRecord
from datalab.identity import accounts

from ..storage.conftest import TEAM, Federated, add_users, embedded_settings, start_federated

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

VALUE = "pa$$ word 'quoted' \"x\""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def vault(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    settings = embedded_settings(
        tmp_path_factory.mktemp("secrets") / "data", storage={"mode": "disabled"}
    )
    platform, http = await start_federated(settings)
    try:
        yield Federated(platform, http, add_users(platform, http))
    finally:
        await http.aclose()
        await platform.stop()


async def test_crud_rename_export(vault: Federated, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = vault.users["alice"]
    assert (await alice.call("GET", "/api/secrets/tree"))["entries"] == ["user-alice/"]
    tops = await alice.call("GET", "/api/secrets/tree", project=TEAM)
    assert tops["entries"] == [f"{TEAM}/", "user-alice/"]
    assert (await alice.call("GET", "/api/secrets/tree/user-alice"))["entries"] == []

    written = await alice.call(
        "PUT", "/api/secrets/values/user-alice/db", json={"data": {"PASSWORD": VALUE, "PORT": 5432}}
    )
    assert written == {"path": "user-alice/db", "version": 1, "keys": ["PASSWORD", "PORT"]}
    await alice.call("PUT", "/api/secrets/values/user-alice/apis/github", json={"data": {"T": "1"}})
    read = await alice.call("GET", "/api/secrets/values/user-alice/db")
    assert read["data"] == {"PASSWORD": VALUE, "PORT": "5432"} and read["version"] == 1
    tree = await alice.call("GET", "/api/secrets/tree/user-alice")
    assert tree["entries"] == ["apis/", "db"]
    updated = await alice.call(
        "PUT", "/api/secrets/values/user-alice/db", json={"data": {"PASSWORD": VALUE}}
    )
    assert updated["version"] == 2
    exported = await alice.call("GET", "/api/secrets/export/user-alice/db")
    assert exported == "export PASSWORD='pa$$ word '\"'\"'quoted'\"'\"' \"x\"'\n"

    renamed = await alice.call(
        "POST", "/api/secrets/rename", json={"source": "user-alice/db", "target": "user-alice/pg"}
    )
    assert renamed["path"] == "user-alice/pg"
    await alice.call("GET", "/api/secrets/values/user-alice/db", expect=404)
    conflict = await alice.call(
        "POST",
        "/api/secrets/rename",
        json={"source": "user-alice/pg", "target": "user-alice/apis/github"},
        expect=409,
    )
    assert VALUE not in str(conflict)
    await alice.call("DELETE", "/api/secrets/values/user-alice/pg")
    await alice.call("GET", "/api/secrets/values/user-alice/pg", expect=404)
    await alice.call("DELETE", "/api/secrets/values/user-alice/pg", expect=404)

    # the project's directory, shared by its members
    await alice.call(
        "PUT", f"/api/secrets/values/{TEAM}/shared", json={"data": {"TOKEN": VALUE}}, project=TEAM
    )
    carol = vault.users["carol"]
    shared = await carol.call("GET", f"/api/secrets/values/{TEAM}/shared", project=TEAM)
    assert shared["data"]["TOKEN"] == VALUE
    assert not any(VALUE in record.getMessage() for record in caplog.records)


async def test_bad_input_and_other_peoples_secrets(vault: Federated) -> None:
    alice, bob = vault.users["alice"], vault.users["bob"]
    await alice.call("PUT", "/api/secrets/values/user-alice/s", json={"data": {"K": VALUE}})
    bad_key = await alice.call(
        "PUT", "/api/secrets/values/user-alice/x", json={"data": {"1-bad": VALUE}}, expect=422
    )
    assert "1-bad" in bad_key["error"]["message"] and VALUE not in str(bad_key)
    await alice.call("PUT", "/api/secrets/values/user-alice/x", json={"data": {}}, expect=422)
    await alice.call("GET", "/api/secrets/values/user-alice", expect=422)  # a directory
    await alice.call("GET", "/api/secrets/values/user-alice/a%2F..%2F..%2Fb", expect=422)

    attempts = refusals = 0
    for method, path, body in (
        ("GET", "values/user-alice/s", None),
        ("PUT", "values/user-alice/s", {"data": {"K": "overwritten"}}),
        ("DELETE", "values/user-alice/s", None),
        ("GET", "tree/user-alice", None),
        ("GET", "export/user-alice/s", None),
        ("GET", f"values/{TEAM}/shared", None),
    ):
        attempts += 1
        response = await bob.http.request(
            method, f"/api/secrets/{path}", headers=bob.headers(), json=body
        )
        refusals += response.status_code == 403
        assert VALUE not in response.text
    as_team = await bob.http.get(f"/api/secrets/tree/{TEAM}", headers=bob.headers(TEAM))
    assert as_team.status_code == 403  # not a member of the project
    assert attempts == refusals == 6
    assert (await alice.call("GET", "/api/secrets/values/user-alice/s"))["data"] == {"K": VALUE}


async def test_vault_token_for_tools_reaches_my_secrets_only(vault: Federated) -> None:
    alice, bob = vault.users["alice"], vault.users["bob"]
    await alice.call("PUT", "/api/secrets/values/user-alice/tool", json={"data": {"K": "v"}})
    await bob.call("PUT", "/api/secrets/values/user-bob/tool", json={"data": {"K": "b"}})
    response = await vault.http.post("/api/secrets/token", headers=alice.headers())
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["ttl_s"] > 0 and answer["top_dir"] == "user-alice"
    assert f"export VAULT_TOKEN={answer['token']}" in answer["exports"]
    headers = {"X-Vault-Token": answer["token"]}
    async with httpx.AsyncClient(base_url=answer["address"]) as direct:
        mine = await direct.get(f"/v1/{answer['mount']}/data/user-alice/tool", headers=headers)
        assert mine.status_code == 200 and mine.json()["data"]["data"] == {"K": "v"}
        theirs = await direct.get(f"/v1/{answer['mount']}/data/user-bob/tool", headers=headers)
        assert theirs.status_code == 403
        renewed = await direct.post("/v1/auth/token/renew-self", headers=headers)
        assert renewed.status_code == 200


async def test_minted_tokens_are_recorded_until_they_expire(vault: Federated) -> None:
    """Each token the platform mints is recorded by accessor (never the token), so that
    disabling its user can revoke it; records of tokens that cannot live any longer go."""
    platform, store = vault.platform, vault.platform.secret_store
    assert store is not None
    with platform.db.session() as session:
        carol_id = accounts.get_user(session, "carol").id
        session.add(
            VaultTokenRecord(
                accessor="long-expired",
                user_id=carol_id,
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )
        )
    token = (await vault.users["carol"].call("POST", "/api/secrets/token"))["token"]
    async with httpx.AsyncClient(base_url=store.address) as direct:
        looked_up = await direct.get("/v1/auth/token/lookup-self", headers={"X-Vault-Token": token})
    accessor = looked_up.json()["data"]["accessor"]
    with platform.db.session() as session:
        records = session.scalars(
            select(VaultTokenRecord).where(VaultTokenRecord.user_id == carol_id)
        ).all()
        accessors = [r.accessor for r in records]
        assert accessor in accessors and "long-expired" not in accessors
        assert token not in str([(r.accessor, r.expires_at) for r in records])
        for record in records:  # the role's maximum lifetime, renewals included
            assert record.expires_at - record.created_at == timedelta(hours=24)
