"""Services listen on Unix sockets only the platform can connect to: the platform's proxy is the
only way in, for other users' programs as for browsers. The project's services reach each other
through it with their own token (a notebook logging to the project's MLflow)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psutil
import pytest

from datalab.backends.local import LocalBackend

from .conftest import TEAM, Ledger, Tenancy, launch, needs_root

pytestmark = [pytest.mark.anyio, pytest.mark.slow, needs_root]


def notebook_runtime(backend: LocalBackend, service: str) -> str:
    """Where the notebook's Jupyter writes its kernels' connection files (jupyter_core's rule)."""
    environ = _environ(backend.get_state(service)["pid"])
    data = environ.get("XDG_DATA_HOME") or f"{environ['HOME']}/.local/share"
    return environ.get("JUPYTER_RUNTIME_DIR") or f"{data}/jupyter/runtime"


def _environ(pid: int) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in line
    )


async def test_services_are_reached_through_the_platform_only(
    tenancy: Tenancy, ledger: Ledger
) -> None:
    alice = tenancy.users["alice"]
    backend = tenancy.platform.backend
    assert isinstance(backend, LocalBackend)
    await launch(alice, "mlflow", "team-mlflow", project=TEAM)
    notebook = await launch(alice, "jupyter-python", "team-nb3", project=TEAM)
    await launch(tenancy.users["mallory"], "file-server", "mallory-files", catalog="test")

    # the notebook was given the project's MLflow at the platform's address, and its own token
    pid = backend.get_state("team-nb3")["pid"]
    environ = _environ(pid)
    tracking = environ["MLFLOW_TRACKING_URI"]
    assert tracking == f"{tenancy.url}/s/team-mlflow/"
    assert notebook["values"]["mlflow"]["trackingUri"] == tracking
    token = environ["MLFLOW_TRACKING_TOKEN"]
    experiments = await tenancy.http.get(
        f"{tracking}api/2.0/mlflow/experiments/search",
        params={"max_results": 10},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert experiments.status_code == 200, experiments.text  # the control: it works

    # a kernel runs in the notebook: its channels are sockets too (a kernel's output channel
    # needs no key to subscribe to, so a loopback port would hand its output to anyone)
    kernels = f"/s/team-nb3/api/kernels?token={notebook['password']}"
    kernel = await alice.call("POST", kernels, json={"name": "python3"}, expect=201)
    connection_file = Path(notebook_runtime(backend, "team-nb3")) / f"kernel-{kernel['id']}.json"
    kernel_url = f"/s/team-nb3/api/kernels/{kernel['id']}?token={notebook['password']}"
    for _ in range(600):  # listening once it has started
        if (await alice.call("GET", kernel_url))["execution_state"] == "idle":
            break
        await asyncio.sleep(0.1)
    channels = json.loads(connection_file.read_text())

    # no service listens where other accounts could connect
    sockets = {}
    ports = []
    for service in ("team-mlflow", "team-nb3", "mallory-files"):
        endpoint = await backend.endpoint(service)
        assert endpoint is not None and endpoint.socket is not None and endpoint.port is None
        sockets[service] = endpoint.socket
        main = psutil.Process(backend.get_state(service)["pid"])
        for process in [main, *main.children(recursive=True)]:
            listening = [
                c.laddr for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN
            ]
            if "ipykernel_launcher" in " ".join(process.cmdline()):
                # ipykernel's one fixed port (not configurable): the pipe through which a forked
                # child's output reaches the kernel, on 127.0.0.1, receive-only, and every
                # message must carry a 16-byte secret of the kernel's or it is dropped
                assert len(listening) == 1 and listening[0].ip == "127.0.0.1", listening
                continue
            ports += [(service, process.name(), address.port) for address in listening]

    # what other users' programs try
    broker = tenancy.platform.services.credentials
    assert broker is not None
    mallory_token = broker.service_token("mallory", "user-mallory", "mallory-files")
    alice_personal = broker.service_token("alice", "user-alice", "team-nb3")  # wrong project
    header, payload, _ = token.split(".")
    forged = f"{header}.{payload}.AAAA"
    mlflow = f"{tenancy.url}/s/team-mlflow/api/2.0/mlflow/experiments/search?max_results=1"
    host = {"Host": tenancy.platform.settings.service_url("team-mlflow").split("/")[2]}
    probes: list[dict[str, object]] = [
        {"kind": "unix", "path": path} for path in sockets.values() if "mallory" not in path
    ]
    probes += [
        {"kind": "tcp", "port": port} for service, _, port in ports if "mallory" not in service
    ]
    if channels["transport"] == "ipc":  # the kernel's output channel, in the service's folder
        probes.append({"kind": "unix", "path": f"{channels['ip']}-{channels['iopub_port']}"})
    for bearer in (mallory_token, alice_personal, forged, tenancy.users["mallory"].token):
        probes.append(
            {"kind": "http", "url": mlflow, "headers": {"Authorization": f"Bearer {bearer}"}}
        )
        probes.append(
            {
                "kind": "http",
                "url": f"{tenancy.url}/api/2.0/mlflow/experiments/search?max_results=1",
                "headers": {**host, "Authorization": f"Bearer {bearer}"},
            }
        )
    probes.append({"kind": "http", "url": mlflow})  # no credential: a redirect, nothing more
    await tenancy.attack(ledger, "service sockets and proxy", "mallory", probes)
    assert not ports, ports  # and none of them listens on a port at all
    assert channels["transport"] == "ipc", channels
    # bob, a member of the project, is refused too: the MLflow is alice's, not shared
    bob = tenancy.users["bob"]
    await tenancy.attack(
        ledger,
        "service sockets and proxy",
        "bob",
        [
            {"kind": "unix", "path": sockets["team-mlflow"]},
            {"kind": "http", "url": mlflow, "headers": {"Authorization": f"Bearer {bob.token}"}},
        ],
    )

    # a deleted service's token opens nothing any more
    await alice.call("DELETE", "/api/services/team-nb3", project=TEAM)
    gone = await tenancy.http.get(mlflow, headers={"Authorization": f"Bearer {token}"})
    ledger.expect_denied(
        "service sockets and proxy", "the token of a deleted service", gone.status_code < 300
    )
    await alice.call("DELETE", "/api/services/team-mlflow", project=TEAM)
    await tenancy.users["mallory"].call("DELETE", "/api/services/mallory-files")
