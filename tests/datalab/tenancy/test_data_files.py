"""Nothing the platform or its embedded servers write can be read by a service account: after
a full scenario (a service launched with S3 and Vault credentials, objects and secrets written,
logs), other users' accounts walk the data directory and read nothing but the shared
environments."""

from __future__ import annotations

import stat

import pytest

from .conftest import Ledger, Tenancy, launch, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]


async def test_data_directory_is_unreadable_by_services(tenancy: Tenancy, ledger: Ledger) -> None:
    alice = tenancy.users["alice"]
    await alice.call(
        "PUT", "/api/secrets/values/user-alice/db", json={"data": {"DB_PASSWORD": "hunter2-alice"}}
    )
    await alice.call(
        "PUT",
        "/api/storage/buckets/user-alice/objects/private/income.csv",
        content=b"id,income\n1,100\n",
    )
    await launch(alice, "jupyter-python", "alice-files", set=["vault.secret=user-alice/db"])
    data = tenancy.data_dir
    # SQLite's write-ahead log holds the service's values (Vault token, refresh token)
    wal = data / "datalab.db-wal"
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600

    # the attacker knows every name (the layout is documented): give them all
    envs = data / "envs"  # public: the services' interpreters and packages
    paths = [str(data)] + [
        str(p) for p in sorted(data.rglob("*")) if not p.is_symlink() and not p.is_relative_to(envs)
    ]
    env_python = next(envs.glob("*/bin/python"))
    for attacker in ("bob", "mallory"):
        probes = [{"kind": "read", "path": p} for p in [*paths, str(env_python)]]
        results = await tenancy.run_as(attacker, probes)
        readable = [r["probe"]["path"] for r in results if r["succeeded"]]
        leaked = [path for path in readable if path != str(env_python)]
        ledger.expect_denied(
            "data directory",
            f"{attacker} reads the {len(paths)} paths of {data}",
            bool(leaked),
            ", ".join(leaked[:20]),
        )
        # the control: the shared environments are readable (they must be)
        assert readable == [str(env_python)]
    await alice.call("DELETE", "/api/services/alice-files")
