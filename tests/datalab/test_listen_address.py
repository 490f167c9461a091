"""Where the embedded S3 and OpenBao listen (storage/secrets ``listen_address``): loopback by
default; another address for the platform's pod on Kubernetes (0.0.0.0 there), where users'
pods reach them through the platform's Service. Only S3's and OpenBao's APIs move: SeaweedFS's
master, volume and filer, and OpenBao's raft port, stay on loopback. Checked on real servers
with 127.0.0.2 (a loopback address other than the platform's own 127.0.0.1)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from datalab.config import Settings
from datalab.processes import local_address
from datalab.secrets.openbao import EmbeddedOpenBao
from datalab.storage.seaweedfs import EmbeddedSeaweedFS, role_policy

OTHER = "127.0.0.2"


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


@pytest.mark.parametrize(
    ("listen", "reached_at"),
    [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), (OTHER, OTHER)],
)
def test_the_platform_reaches_its_servers_at_a_local_address(listen: str, reached_at: str) -> None:
    assert local_address(listen) == reached_at


def test_the_setting_is_an_address() -> None:
    settings = Settings(storage={"listen_address": "0.0.0.0"}, secrets={"listen_address": "::"})
    assert str(settings.storage.listen_address) == "0.0.0.0"
    assert str(settings.secrets.listen_address) == "::"
    assert str(Settings().storage.listen_address) == "127.0.0.1"
    with pytest.raises(ValueError, match="listen_address"):
        Settings(storage={"listen_address": "s3.example.org"})


@pytest.mark.anyio
async def test_seaweedfs_moves_only_its_s3_api(tmp_path: Path) -> None:
    s3 = EmbeddedSeaweedFS(tmp_path / "data", listen_address=OTHER)
    assert s3.endpoint_url == f"http://{OTHER}:{s3.ports['s3']}"
    await s3.start(
        issuer_url="http://127.0.0.1:9/",
        jwks_url="http://127.0.0.1:9/jwks",
        audience="x",
        max_session_s=3600,
        policy=role_policy(),
    )
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(s3.endpoint_url + "/")).status_code == 403  # S3, anonymous
        # (SeaweedFS also listens on loopback for an address of its own: the platform's pod)
        for internal in ("master", "volume", "filer"):
            assert _accepts("127.0.0.1", s3.ports[internal]), internal
            assert not _accepts(OTHER, s3.ports[internal]), internal
    finally:
        await s3.stop()


@pytest.mark.anyio
async def test_openbao_moves_only_its_api(tmp_path: Path) -> None:
    vault = EmbeddedOpenBao(tmp_path / "data", listen_address=OTHER)
    assert vault.address == f"http://{OTHER}:{vault.port}"
    await vault.start()
    try:
        async with httpx.AsyncClient(trust_env=False) as http:
            health = await http.get(f"{vault.address}/v1/sys/health")
        assert health.status_code == 200 and health.json()["sealed"] is False
        assert not _accepts("127.0.0.1", vault.port)
        assert not _accepts(OTHER, vault.cluster_port)
    finally:
        await vault.stop()
