"""Fixtures of the API tests: model directories, credentials, the app in-process (httpx ASGI
transport), registered model versions on a real MLflow server, and real server processes.

The fixtures of ``tests/autocode/conftest.py`` (nomenclature folder, ``small_model``, SeaweedFS,
MLflow) are visible here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from autocode.serve.settings import Settings

VENV_BIN = Path(sys.executable).parent
REGISTERED = "autocode-api-test"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    # module scope: module-scoped async fixtures (one app per module) share the event loop
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- models ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_dir(small_model) -> Path:
    """The small trained ensemble (divisions 10 and 56), as `autocode train` writes it."""
    return Path(small_model.output)


@pytest.fixture(scope="session")
def small_coder(small_model):
    return small_model.coder


CATEGORICAL_ROWS = [
    ("restaurant traditionnel service à table", "56.10A"),
    ("brasserie restaurant cuisine traditionnelle", "56.10A"),
    ("cafétéria self service libre service", "56.10B"),
    ("restauration rapide vente de sandwichs à emporter", "56.10C"),
    ("pizzas à emporter kebab", "56.10C"),
    ("traiteur organisation de réceptions", "56.21Z"),
    ("cantine restauration collective sous contrat", "56.29A"),
    ("autres services de restauration", "56.29B"),
    ("débit de boissons bar café", "56.30Z"),
    ("bar tabac débit de boissons", "56.30Z"),
]


@pytest.fixture(scope="session")
def categorical_model_dir(tmp_path_factory, naf2008) -> Path:
    """A tiny model of division 56 with two categorical variables, ``nature`` (10, 20) and
    ``surface`` (1, 2, 3): fast to train (under a second), saved as a pyfunc directory."""
    import pandas as pd

    from autocode.model import Coder, make_classifier, save_pyfunc
    from autocode.train import restrict

    rows = []
    for index, (text, code) in enumerate(CATEGORICAL_ROWS * 10):
        rows.append(
            {
                "text": text,
                "code": code,
                "nature": ["10", "20"][index % 2],
                "surface": str(1 + index % 3),
            }
        )
    table = pd.DataFrame(rows)
    for attempt in range(3):
        coder = Coder(
            classifier=make_classifier(
                "ensemble",
                {
                    "members": {
                        "fasttext": {
                            "epoch": 20,
                            "dim": 16,
                            "lr": 0.1,
                            "thread": 1,
                            "bucket": 50000,
                            "seed": attempt,
                        },
                        "tfidf": {},
                    }
                },
            ),
            nomenclature=restrict(naf2008, ["56"]),
            categorical=("nature", "surface"),
            threshold=0.5,
            k=3,
        )
        try:
            coder.classifier.fit(coder.features(table), table["code"].tolist())
            break
        except RuntimeError:  # fastText now and then "diverges" on tiny data (reported)
            if attempt == 2:
                raise
    path = tmp_path_factory.mktemp("categorical-model") / "model"
    save_pyfunc(coder, path)
    return path


# -- credentials ----------------------------------------------------------------------------------
class Credentials:
    def __init__(self, root: Path):
        from autocode.serve.auth import KeysFile, UsersFile

        self.keys_file = root / "api-keys.json"
        self.users_file = root / "users.json"
        self.keys = KeysFile(self.keys_file)
        self.users = UsersFile(self.users_file)
        entry, self.key = self.keys.add("tests")
        self.key_id = entry.id
        self.password = self.users.add("alice", "alice-password-123")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> Credentials:
    return Credentials(tmp_path_factory.mktemp("credentials"))


# -- the app in-process ---------------------------------------------------------------------------
class AppClient(httpx.AsyncClient):
    """An httpx client on the app in-process (`running_app`), with the ``app`` itself and, when
    a fixture sets it, the ``spool`` folder of its prediction log."""

    app: FastAPI
    spool: Path


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, *, wait_ready: bool = True, **kwargs: Any
) -> AsyncIterator[AppClient]:
    """The app with its lifespan running, and an httpx client on it (ASGI transport)."""
    from autocode.serve.app import create_app

    app = create_app(settings, **kwargs)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AppClient(transport=transport, base_url="http://api") as client:
            client.app = app
            if wait_ready:
                await wait_until_ready(client)
            yield client


async def wait_until_ready(client: httpx.AsyncClient, timeout: float = 60.0) -> dict[str, Any]:
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/ready")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"not ready after {timeout}s: {response.text}")
        await anyio.sleep(0.05)


def settings_for(
    model: Path | str, spool: Path, credentials: Credentials | None, **overrides: Any
) -> Settings:
    from autocode.serve.settings import Settings

    values: dict[str, Any] = {
        "model": str(model),
        "log_dir": spool,
        "poll_interval_s": 0,
        "load_retry_initial_s": 0.1,
        "load_retry_max_s": 0.5,
    }
    if credentials is not None:
        values["api_keys_file"] = credentials.keys_file
        values["users_file"] = credentials.users_file
    values.update(overrides)
    return Settings(**values)


def spool_records(spool: Path) -> list[dict[str, Any]]:
    """Every record in a spool directory (open, sealed and shipped segments)."""
    from autocode.serve.spool import read_records

    records = []
    for sub in ("open", "sealed", "shipped"):
        for path in sorted((spool / sub).glob("*.jsonl")):
            records += read_records(path)
    return records


# -- registered versions on a real MLflow server --------------------------------------------------
@pytest.fixture(scope="session")
def registered_model(small_model, seaweedfs, mlflow_server, tmp_path_factory) -> dict[str, Any]:
    """Two versions of ``autocode-api-test`` (the small coder logged twice, each run with its own
    metrics); the alias ``champion`` points at version 1."""
    import mlflow

    from autocode.model import pyfunc_arguments

    env = {k: v for k, v in seaweedfs.items() if k != "bucket"}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    patch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    try:
        mlflow.set_tracking_uri(mlflow_server)
        mlflow.set_experiment("autocode-api-tests")
        versions = []
        for accuracy in (0.61, 0.72):
            with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
                mlflow.log_metric("val_accuracy", accuracy)
                mlflow.log_param("model", "ensemble")
                info = mlflow.pyfunc.log_model(
                    name="model",
                    registered_model_name=REGISTERED,
                    **pyfunc_arguments(small_model.coder, Path(tmp)),
                )
                versions.append(
                    {
                        "version": str(info.registered_model_version),
                        "run_id": run.info.run_id,
                        "val_accuracy": accuracy,
                    }
                )
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(REGISTERED, "champion", versions[0]["version"])
    finally:
        patch.undo()
    return {"name": REGISTERED, "versions": versions, "env": env, "tracking_uri": mlflow_server}


@pytest.fixture
def registry_env(monkeypatch, registered_model) -> dict[str, Any]:
    for key, value in registered_model["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered_model["tracking_uri"])
    return registered_model


def set_alias(registered: dict[str, Any], alias: str, version: str) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=registered["tracking_uri"])
    client.set_registered_model_alias(registered["name"], alias, version)


# -- real server processes ------------------------------------------------------------------------
class ServerProcess:
    """``python -m autocode.serve`` in a subprocess, on a loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "autocode.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *self.args,
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                response = httpx.get(f"{self.url}/ready", timeout=2)
                if response.status_code == 200:
                    return response.json()
                last = response.text
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s ({last}):\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs (the crash case)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM: graceful shutdown (uvicorn drains requests, the log is sealed and shipped)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@pytest.fixture
def server_factory(tmp_path) -> Iterator[Any]:
    servers: list[ServerProcess] = []

    def make(args: list[str], env: dict[str, str], port: int | None = None) -> ServerProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AUTOCODE_API_")}
        server = ServerProcess(args, {**base, **env}, tmp_path / "server.log", port)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


class LoadGenerator:
    """A bounded load in the test process: ``threads`` clients sending requests in a loop
    until stopped (or ``max_requests`` each). Collects answered prediction ids and failures."""

    def __init__(
        self, url: str, headers: dict[str, str], threads: int = 4, max_requests: int = 20_000
    ):
        self.url = url
        self.headers = headers
        self.threads = threads
        self.max_requests = max_requests
        self.answered: list[dict[str, Any]] = []  # {"id", "version", "thread", "seq"}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)

    def _run(self, index: int) -> None:
        texts = [
            "boulangerie pâtisserie",
            "restaurant traditionnel",
            "fabrication de glaces",
            "vente de pizzas à emporter",
            "traiteur",
        ]
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=10) as client:
            for seq in range(self.max_requests):
                if self._stop.is_set():
                    return
                size = 1 + seq % 3
                items = [{"text": texts[(seq + i) % len(texts)]} for i in range(size)]
                try:
                    response = client.post("/predict", json={"items": items, "k": 2})
                except httpx.TransportError as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    with self._lock:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                body = response.json()
                with self._lock:
                    for result in body["results"]:
                        self.answered.append(
                            {
                                "id": result["id"],
                                "version": result["model"]["version"],
                                "thread": index,
                                "seq": seq,
                            }
                        )


def s3_records(env: dict[str, str], bucket: str, prefix: str) -> tuple[list[str], list[dict]]:
    """Object keys under ``prefix`` and every record they hold."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    records = []
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        records += [json.loads(line) for line in body.splitlines() if line.strip()]
    return sorted(keys), records
