"""The audit log: every state-changing request recorded once, by one middleware; admins query
and export it; the table is append-only."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from .conftest import Env

pytestmark = pytest.mark.anyio


async def test_state_changes_are_recorded_with_who_what_and_outcome(env: Env) -> None:
    alice, bob = await env.user("alice"), await env.user("bob")
    await alice.call("POST", "/api/services", json={"chart": "jupyter-python", "name": "nb"})
    await alice.call("GET", "/api/services")  # reads are not recorded
    await bob.call("DELETE", "/api/services/nb", expect=404)
    await alice.call("POST", "/api/services/nb/suspend")
    await alice.call("DELETE", "/api/services/nb")
    await env.http.post("/api/services", headers={"Authorization": "Bearer dlb_forged-token-xyz"})

    entries = (await env.admin.call("GET", "/api/audit"))["entries"]
    recorded = [(e["user"], e["action"], e["target"], e["outcome"], e["status"]) for e in entries]
    assert recorded[:5] == [
        (None, recorded[0][1], "/api/services", "denied", 401),
        ("alice", recorded[1][1], "service_id=nb", "success", 200),
        ("alice", recorded[2][1], "service_id=nb", "success", 200),
        ("bob", recorded[3][1], "service_id=nb", "failed", 404),
        ("alice", recorded[4][1], "/api/services", "success", 200),
    ]
    assert recorded[1][1] == recorded[3][1] and recorded[1][1].startswith("services.")
    assert entries[1]["project"] == "user-alice" and entries[3]["project"] == "user-bob"
    assert entries[1]["client_ip"] == "127.0.0.1" and entries[1]["method"] == "DELETE"
    assert all(e["at"].endswith("+00:00") for e in entries)

    only_bob = await env.admin.call("GET", "/api/audit", params={"user": "bob"})
    assert [e["user"] for e in only_bob["entries"]] == ["bob"]
    denied = await env.admin.call("GET", "/api/audit", params={"outcome": "denied"})
    assert {e["status"] for e in denied["entries"]} == {401}
    page = await env.admin.call("GET", "/api/audit", params={"limit": 2})
    older = await env.admin.call(
        "GET", "/api/audit", params={"limit": 2, "before_id": page["next_before_id"]}
    )
    assert [e["id"] for e in older["entries"]] == [entries[2]["id"], entries[3]["id"]]

    exported = await env.admin.call("GET", "/api/audit/export", params={"user": "alice"})
    lines = [json.loads(line) for line in exported.splitlines()]
    assert [line["user"] for line in lines] == ["alice"] * 3
    assert lines[0]["id"] < lines[-1]["id"]  # oldest first

    await alice.call("GET", "/api/audit", expect=403)
    await alice.call("GET", "/api/audit/export", expect=403)


async def test_the_log_is_append_only(env: Env) -> None:
    await env.admin.call("POST", "/api/catalogs/refresh")
    for statement in ("UPDATE audit_log SET user_name = 'x'", "DELETE FROM audit_log"):
        # a connection each: on PostgreSQL a refused statement aborts its transaction
        with (
            env.platform.db.engine.connect() as connection,
            pytest.raises(DatabaseError, match="append-only"),
        ):
            connection.execute(text(statement))
