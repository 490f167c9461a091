"""A real, throwaway Kubernetes control plane for the tests, on loopback.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes: pods become
Running without a container runtime), built by ``make kube-testenv`` from ``tools/kube-testenv``
(the pinned release is the ``k8s.io/kubernetes`` line of its go.mod) into
``.cache/kube-testenv/<release>/bin`` (``KUBE_TESTENV_BIN`` overrides the folder).

The API server runs as a production one would on these points: TLS with client certificates
from a private CA, service-account tokens signed by its own key, ``--authorization-mode=Node,RBAC``,
the ResourceQuota and NodeRestriction admission plugins; the controller manager signs CSRs with
the same CA and uses one service account per controller.

Use the session fixture ``kube_cluster`` (registered in tests/conftest.py: don't import it into
a test module, which would start a second cluster). It gives a :class:`KubeCluster`:
``kube_cluster.kubeconfig`` is the admin kubeconfig (``system:masters``), ``kube_cluster.client()``
an ``httpx.Client`` on the API, ``kube_cluster.user_kubeconfig("alice", ("team",))`` a kubeconfig
with a client certificate for any user (``client(user="alice")`` likewise),
``kube_cluster.append_pod_log("a line")`` what every container logs (kwok serves it to
``GET .../pods/NAME/log``). The binaries missing is a test failure naming them and the make
target, never a skip.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import datetime
import functools
import ipaddress
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from datalab.processes import free_port

REPO = Path(__file__).resolve().parents[2]
GO_MOD = REPO / "tools" / "kube-testenv" / "go.mod"
MAKE_TARGET = "make kube-testenv"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_STAGES = "kwok-stages.yaml"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.1/16"
# kwok manages the nodes with this annotation (and only them).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
START_TIMEOUT_S = 120.0

T = TypeVar("T")


class MissingBinaries(RuntimeError):
    """The control plane is not built: the message names what is missing and how to build it."""


class ClusterFailed(RuntimeError):
    """A component did not start or stopped; the message has the end of its log."""


def kubernetes_release() -> str:
    """The pinned Kubernetes release, read from tools/kube-testenv/go.mod."""
    found = re.search(r"^\s*k8s\.io/kubernetes\s+(v\S+)", GO_MOD.read_text(), re.MULTILINE)
    if not found:
        raise RuntimeError(f"{GO_MOD}: no k8s.io/kubernetes requirement")
    return found.group(1)


def bin_dir() -> Path:
    override = os.environ.get("KUBE_TESTENV_BIN")
    if override:
        return Path(override)
    return REPO / ".cache" / "kube-testenv" / kubernetes_release() / "bin"


def binaries() -> dict[str, Path]:
    """Each component's executable; :class:`MissingBinaries` if any is missing."""
    folder = bin_dir()
    found = {name: folder / name for name in (*BINARIES, KWOK_STAGES)}
    missing = [
        name
        for name, path in found.items()
        if not path.is_file() or (name != KWOK_STAGES and not os.access(path, os.X_OK))
    ]
    if missing:
        raise MissingBinaries(
            f"the test Kubernetes control plane is not built: {', '.join(missing)} missing in "
            f"{folder}. Build it with `{MAKE_TARGET}` (Go, from tools/kube-testenv; `make test` "
            "runs it first)."
        )
    return found


def wait_for(
    check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Call ``check`` until it returns something other than None/False, or fail naming
    ``what`` and the last exception the check raised."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


# --- PKI -------------------------------------------------------------------------------------


def _pem_key(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


class CertificateAuthority:
    """A private CA (ECDSA P-256) for the API server, its clients and the CSR signer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "datalab-testenv-ca")])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_file = self._write("ca.crt", self.cert_pem)
        self.key_file = self._write("ca.key", _pem_key(self.key))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        """A certificate (client, or server when ``server_names`` are given) and its key, as
        files ``<name>.crt`` and ``<name>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            alt_names: list[x509.GeneralName] = []
            for entry in server_names:
                try:
                    alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
                except ValueError:
                    alt_names.append(x509.DNSName(entry))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).sign(
            self.key, hashes.SHA256()
        )
        return (
            self._write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{name}.key", _pem_key(key)),
        )


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, cert: Path, key: Path, user: str, namespace: str
) -> Path:
    """A self-contained kubeconfig (certificates inline), mode 0600."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testenv",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(cert.read_bytes()),
                    "client-key-data": b64(key.read_bytes()),
                },
            }
        ],
        "contexts": [
            {
                "name": f"{user}@testenv",
                "context": {"cluster": "testenv", "user": user, "namespace": namespace},
            }
        ],
        "current-context": f"{user}@testenv",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --- the cluster -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies without stopping it (killed), so that
    no control plane is left running (Linux's PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


class Component:
    """One child process, its output in ``logs/<name>.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its children
            preexec_fn=_die_with_parent,
        )

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise ClusterFailed(f"{self.name} exited with code {code}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


#: a pod labelled ``testfault: <fault>`` plays that fault on kwok's nodes (failure doubles for
#: the backend contract tests): ``never-ready`` runs and never becomes Ready, ``crash`` is in
#: CrashLoopBackOff after exiting with code 1, ``slow-stop`` takes SLOW_STOP_S to go away
FAULT_LABEL = "testfault"
SLOW_STOP_S = 4


def faulty_stages(default_stages: str) -> list[dict[str, Any]]:
    """kwok's default stages for pods without the fault label, and for those with it: the
    same start but never Ready (``never-ready``) or crashing (``crash``), the same start and a
    slow deletion (``slow-stop``)."""
    fault = f".metadata.labels.{FAULT_LABEL}"
    stages: list[dict[str, Any]] = []
    for stage in (doc for doc in yaml.safe_load_all(default_stages) if doc):
        name = stage["metadata"]["name"]
        if name not in ("pod-ready", "pod-delete"):
            stages.append(stage)
            continue
        stages.append(_with_fault(stage, name, {"key": fault, "operator": "DoesNotExist"}))
        if name == "pod-ready":
            stages.append(_with_fault(stage, "pod-ready-slow-stop", _fault_is(fault, "slow-stop")))
            for fault_name, container in (("never-ready", _NEVER_READY), ("crash", _CRASH)):
                started = _with_fault(stage, f"pod-{fault_name}", _fault_is(fault, fault_name))
                started["spec"]["next"] = {"statusTemplate": _RUNNING.format(container=container)}
                stages.append(started)
        else:
            stages.append(
                _with_fault(stage, "pod-delete-faulty", _fault_is(fault, "never-ready", "crash"))
            )
            slow = _with_fault(stage, "pod-delete-slowly", _fault_is(fault, "slow-stop"))
            slow["spec"]["delay"] = {"durationMilliseconds": SLOW_STOP_S * 1000}
            stages.append(slow)
    return stages


def _fault_is(key: str, *faults: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(faults)}


def _with_fault(stage: dict[str, Any], name: str, expression: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``stage`` named ``name``, selecting also on ``expression``."""
    copy = yaml.safe_load(yaml.safe_dump(stage))
    copy["metadata"]["name"] = name
    copy["spec"]["selector"]["matchExpressions"].append(expression)
    return copy


# a started pod that is not Ready, its containers' statuses filled in by the fault
_RUNNING = """{{{{ $now := Now }}}}
conditions:
- {{type: Initialized, status: "True", lastTransitionTime: {{{{ $now | Quote }}}}}}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{{{ $now | Quote }}}}
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
{container}{{{{ end }}}}
phase: Running
startTime: {{{{ $now | Quote }}}}
"""
_NEVER_READY = """  restartCount: 0
  started: true
  state: {running: {startedAt: {{ $now | Quote }}}}
"""
_CRASH = """  restartCount: 3
  lastState: {terminated: {exitCode: 1, reason: Error, finishedAt: {{ $now | Quote }}}}
  state: {waiting: {reason: CrashLoopBackOff, message: "back-off 40s restarting failed container"}}
"""


class KubeCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback, in
    ``root`` (a fresh temporary folder by default). :meth:`start`, then :meth:`stop`."""

    def __init__(self, root: Path | None = None, nodes: int = 2) -> None:
        self.binaries = binaries()
        self.release = kubernetes_release()
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="datalab-kube-testenv-"))
        self.node_count = nodes
        self.pki = self.root / "pki"
        self.log_dir = self.root / "logs"
        self.components: dict[str, Component] = {}
        self.api_port = free_port()
        self.api_url = f"https://127.0.0.1:{self.api_port}"
        self.kubeconfig = self.root / "admin.kubeconfig"
        self.node_names = [f"kwok-node-{index}" for index in range(nodes)]
        # What kwok serves as every container's log, in the CRI format: append_pod_log().
        self.pod_log_file = self.root / "pods.log"
        self.started_in: float | None = None
        self._ca: CertificateAuthority | None = None

    # --- public helpers

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise RuntimeError("the cluster is not started")
        return self._ca

    def ssl_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert_file))
        context.load_cert_chain(
            str(cert or self.pki / "admin.crt"), str(key or self.pki / "admin.key")
        )
        return context

    def client(self, user: str | None = None, groups: tuple[str, ...] = ()) -> httpx.Client:
        """An HTTP client on the API server, as the admin or (``user``) as that user."""
        if user is None:
            context = self.ssl_context()
        else:
            cert, key = self.ca.issue(f"user-{user}", user, organizations=groups)
            context = self.ssl_context(cert, key)
        return httpx.Client(base_url=self.api_url, verify=context, timeout=30)

    def user_kubeconfig(
        self, user: str, groups: tuple[str, ...] = (), namespace: str = "default"
    ) -> Path:
        """A kubeconfig authenticating as ``user`` (in ``groups``) by a client certificate."""
        cert, key = self.ca.issue(f"user-{user}", user, organizations=groups)
        return write_kubeconfig(
            # no ':' in the file name (service accounts' names have them): kubeconfig paths
            # are ':'-separated lists for clients
            self.root / f"{user.replace(':', '_')}.kubeconfig",
            self.api_url,
            self.ca.cert_pem,
            cert,
            key,
            user,
            namespace,
        )

    def append_pod_log(self, *lines: str, stream: str = "stdout") -> None:
        """Append lines to what every container logs (kwok reads the CRI log format)."""
        with self.pod_log_file.open("a") as handle:
            for line in lines:
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                handle.write(f"{stamp} {stream} F {line}\n")

    def logs(self, name: str, lines: int = 50) -> str:
        return self.components[name].log_tail(lines)

    # --- lifecycle

    def start(self) -> KubeCluster:
        started = time.monotonic()
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        return self

    def _start(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._make_pki()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url)
        with self.client() as api:
            self._wait_ok(api, "/readyz", "kube-apiserver")
            health = {
                "kube-controller-manager": self._start_controller_manager(),
                "kube-scheduler": self._start_scheduler(),
                "kwok": self._start_kwok(),
            }
            for name, url in health.items():
                self._wait_health(name, url)
            for node in self.node_names:
                self._create_node(api, node)
            for node in self.node_names:
                self._wait(functools.partial(self._node_ready, api, node), f"node {node} Ready")
            # The controllers are at work once the default service account exists.
            self._wait(
                lambda: (
                    api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
                ),
                "the default service account (kube-controller-manager)",
            )

    def stop(self) -> None:
        atexit.unregister(self.stop)
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            component = self.components.pop(name, None)
            if component is not None:
                component.stop()
        if self._own_root and os.environ.get("KUBE_TESTENV_KEEP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)

    # --- steps

    def _make_pki(self) -> None:
        ca = self._ca = CertificateAuthority(self.pki)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        ca.issue("kubelet-client", "kube-apiserver-kubelet-client", organizations=("kubeadm",))
        ca.issue("kwok-serving", "kwok", server_names=("127.0.0.1", "localhost"))
        cert, key = ca.issue("admin", "datalab-testenv-admin", organizations=("system:masters",))
        write_kubeconfig(self.kubeconfig, self.api_url, ca.cert_pem, cert, key, "admin", "default")
        for name, user in (
            ("kube-controller-manager", "system:kube-controller-manager"),
            ("kube-scheduler", "system:kube-scheduler"),
        ):
            cert, key = ca.issue(name, user)
            write_kubeconfig(
                self.pki / f"{name}.kubeconfig",
                self.api_url,
                ca.cert_pem,
                cert,
                key,
                user,
                "default",
            )
        # kwok plays the kubelets of many nodes: it runs with the admin's rights.
        cert, key = ca.issue("kwok", "kwok", organizations=("system:masters",))
        write_kubeconfig(
            self.pki / "kwok.kubeconfig", self.api_url, ca.cert_pem, cert, key, "kwok", "default"
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.pki / "sa.key").write_bytes(_pem_key(sa_key))
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def _spawn(self, name: str, *args: str) -> Component:
        component = Component(name, [str(self.binaries[name]), *args], self.log_dir)
        self.components[name] = component
        return component

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            "--name=testenv",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=testenv={peer_url}",
            "--unsafe-no-fsync=true",  # a throwaway store: no fsync, much faster writes
            "--log-level=warn",
        )
        with httpx.Client(timeout=5) as http:
            self._wait(
                lambda: http.get(f"{url}/health").json().get("health") == "true",
                "etcd",
                component="etcd",
            )
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.root / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            # Logs, exec and port-forward go to the "kubelet" at the node's InternalIP: kwok.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # In addition to the default plugins (NamespaceLifecycle, LimitRanger,
            # ServiceAccount, ResourceQuota, PodSecurity, webhooks...): stated for clarity.
            "--enable-admission-plugins=NodeRestriction,ResourceQuota,LimitRanger",
            "--allow-privileged=true",
            "--profiling=false",
        )

    def _start_controller_manager(self) -> str:
        port = free_port()
        kubeconfig = self.pki / "kube-controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.root / 'controller-manager'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
            f"--cluster-signing-key-file={self.pki / 'ca.key'}",
            "--cluster-name=datalab-testenv",
            "--profiling=false",
        )
        return f"https://127.0.0.1:{port}/healthz"

    def _start_scheduler(self) -> str:
        port = free_port()
        kubeconfig = self.pki / "kube-scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.root / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
        )
        return f"https://127.0.0.1:{port}/healthz"

    def _start_kwok(self) -> str:
        port = free_port()
        key, value = KWOK_NODE_ANNOTATION
        self._spawn(
            "kwok",
            f"--kubeconfig={self.pki / 'kwok.kubeconfig'}",
            f"--config={self._kwok_config()}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{port}",
            f"--node-port={port}",
            f"--tls-cert-file={self.pki / 'kwok-serving.crt'}",
            f"--tls-private-key-file={self.pki / 'kwok-serving.key'}",
        )
        return f"https://127.0.0.1:{port}/healthz"

    def _kwok_config(self) -> Path:
        """kwok's default stages, plus every container's logs read from
        :attr:`pod_log_file` (what ``GET .../pods/NAME/log`` returns, followed when asked)."""
        logs = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "every-container"},
            "spec": {"logs": [{"containers": [], "logsFile": str(self.pod_log_file)}]},
        }
        self.pod_log_file.touch()
        path = self.root / "kwok.yaml"
        documents = [*faulty_stages(self.binaries[KWOK_STAGES].read_text()), logs]
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        return path

    def _create_node(self, api: httpx.Client, name: str) -> None:
        key, value = KWOK_NODE_ANNOTATION
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {"allocatable": resources, "capacity": resources},
        }
        response = api.post("/api/v1/nodes", json=node)
        if response.status_code != 201:
            raise ClusterFailed(f"creating node {name}: {response.status_code} {response.text}")

    @staticmethod
    def _node_ready(api: httpx.Client, name: str) -> bool:
        response = api.get(f"/api/v1/nodes/{name}")
        conditions = response.json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _wait_ok(self, api: httpx.Client, path: str, component: str) -> None:
        self._wait(lambda: api.get(path).status_code == 200, component, component=component)

    def _wait_health(self, component: str, url: str) -> None:
        # Their serving certificates are self-signed (in --cert-dir): check liveness only.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with httpx.Client(verify=context, timeout=5) as http:
            self._wait(lambda: http.get(url).status_code == 200, component, component=component)

    def _wait(self, check: Callable[[], Any], what: str, component: str | None = None) -> None:
        """Wait for ``check``, failing early (with its log) when a component has exited."""

        def checked() -> Any:
            for each in self.components.values():
                each.check_alive()
            return check()

        try:
            wait_for(checked, what, timeout=START_TIMEOUT_S)
        except TimeoutError as exc:
            logs = [component] if component else list(self.components)
            tails = "\n".join(f"--- {n}:\n{self.components[n].log_tail(15)}" for n in logs)
            raise ClusterFailed(f"{exc}\n{tails}") from None


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """A real control plane for the whole session (started in about 10 s once built)."""
    try:
        cluster = KubeCluster()
    except MissingBinaries as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # outside the except: the failure is this message alone
        pytest.fail(missing, pytrace=False)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
