"""SeaweedFS's internal endpoints (master, volume, filer; HTTP and gRPC) and the files naming
them are out of reach of services: only the S3 gateway, with credentials, is a way in."""

from __future__ import annotations

import glob

import httpx
import pytest

from .conftest import Ledger, Tenancy, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]


async def test_seaweedfs_internals_refuse_other_accounts(tenancy: Tenancy, ledger: Ledger) -> None:
    storage = tenancy.platform.storage
    assert storage is not None and storage.embedded is not None
    embedded = storage.embedded
    await storage.ensure_bucket("user-alice")
    admin = storage.admin_client()
    admin.put_object(Bucket="user-alice", Key="confidential.csv", Body=b"id,income\n1,100\n")
    ports = embedded.ports
    http_paths = {
        "filer": ["/", "/healthz", "/buckets/", "/buckets/user-alice/confidential.csv"],
        "master": [
            "/dir/status",
            "/dir/assign",
            "/vol/status",
            "/cluster/status",
            "/col/delete?collection=user-alice",
        ],
        "volume": ["/status", "/ui/index.html", "/1,01"],
    }
    probes: list[dict[str, object]] = []
    for component, paths in http_paths.items():
        probes += [{"kind": "plain_http", "port": ports[component], "path": p} for p in paths]
        probes.append({"kind": "tls_without_certificate", "port": ports[component]})
    for grpc in ("master_grpc", "volume_grpc", "filer_grpc", "s3_grpc"):
        probes.append({"kind": "tls_without_certificate", "port": ports[grpc]})
        probes.append({"kind": "plain_http", "port": ports[grpc]})
    # the ports file, the configuration and keys, the local sockets SeaweedFS makes in /tmp
    probes += [
        {"kind": "read", "path": str(embedded.root / "ports.json")},
        {"kind": "read", "path": str(embedded.root / "security.toml")},
        {"kind": "read", "path": str(embedded.keys_dir / "seaweedfs-tls" / "key.pem")},
    ]
    own_ports = {str(p) for p in ports.values()}
    for path in glob.glob("/tmp/seaweedfs-*.sock"):
        if path.rsplit("-", 1)[-1].removesuffix(".sock") in own_ports:
            probes.append({"kind": "unix", "path": path})
    await tenancy.attack(ledger, "seaweedfs internals", "mallory", probes)

    # the control: the platform's certificate opens the filer, and the data is intact
    async with httpx.AsyncClient(verify=embedded.internal_tls(), trust_env=False) as client:
        answer = await client.get(f"https://127.0.0.1:{ports['filer']}/healthz")
        assert answer.status_code == 200
    body = admin.get_object(Bucket="user-alice", Key="confidential.csv")["Body"].read()
    assert body == b"id,income\n1,100\n"
    # and S3, with credentials, is the way in
    results = await tenancy.run_as(
        "mallory", [{"kind": "plain_http", "port": int(storage.endpoint_url.rsplit(":", 1)[1])}]
    )
    assert "HTTP 403" in results[0]["detail"]  # S3 answers, and refuses the anonymous
