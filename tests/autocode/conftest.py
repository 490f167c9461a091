"""Fixtures of the autocode tests: the shared nomenclature files, a small trained coder, and
real servers (SeaweedFS for S3, an MLflow tracking server on SQLite with S3 artifacts)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Training on divisions 10 (food) and 56 (restaurants) keeps every test model small and fast.
SMALL_CODES = ["10", "56"]


@pytest.fixture(scope="session", autouse=True)
def embedding_cache(tmp_path_factory, monkeypatch_session) -> Path:
    """The e5 embeddings of training rows are cached in the test session's folder (shared with
    the CLI subprocesses), never in the user's cache directory."""
    path = tmp_path_factory.mktemp("embedding-cache") / "embeddings.sqlite3"
    monkeypatch_session.setenv("AUTOCODE_EMBEDDING_CACHE", str(path))
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # MLflow and its dependencies warn about their own internals (not about our code).
    for item in items:
        if "tests/autocode" in str(item.path):
            item.add_marker(pytest.mark.filterwarnings("ignore::FutureWarning:mlflow.*"))
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::UserWarning:mlflow.*"))


@pytest.fixture(scope="session")
def nomenclatures_dir() -> Path:
    folder = Path(
        os.environ.get("AUTOCODE_NOMENCLATURES")
        or REPO.parent / "shared" / "data" / "nomenclatures"
    )
    if not (folder / "naf2008_hierarchy.csv").is_file():
        pytest.fail(f"nomenclature files not found in {folder}: set AUTOCODE_NOMENCLATURES")
    return folder


@pytest.fixture(scope="session")
def naf2008(nomenclatures_dir):
    from autocode.nomenclature import load_naf2008

    return load_naf2008(nomenclatures_dir)


@pytest.fixture(scope="session")
def notes_fr(nomenclatures_dir):
    from autocode.nomenclature import load_notes_fr

    return load_notes_fr(nomenclatures_dir)


@pytest.fixture(scope="session")
def small_nomenclature(naf2008):
    """NAF rév. 2 restricted to `SMALL_CODES`."""
    from autocode.train import restrict

    return restrict(naf2008, SMALL_CODES)


@pytest.fixture(scope="session")
def cold_start(small_nomenclature, notes_fr):
    """The cold-start rows of `small_nomenclature`."""
    from autocode.data import build_cold_start

    return build_cold_start(small_nomenclature, notes_fr)


def small_config(tmp_path: Path, nomenclatures_dir: Path, **overrides):
    """A fast training config: two divisions, few epochs."""
    from autocode.train import TrainConfig

    raw = {
        "nomenclatures_folder": str(nomenclatures_dir),
        "only_codes": SMALL_CODES,
        "model": "ensemble",
        "params": {"members": {"fasttext": {"epoch": 50, "dim": 30, "thread": 1}, "tfidf": {}}},
        "output": str(tmp_path / "model"),
        "mlflow": {"tracking_uri": None},
    }
    raw.update(overrides)
    return TrainConfig.from_dict(raw)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, nomenclatures_dir, monkeypatch_session):
    """A small trained ensemble saved as a pyfunc directory: (TrainResult, path)."""
    from autocode.train import train

    monkeypatch_session.delenv("MLFLOW_TRACKING_URI", raising=False)
    tmp = tmp_path_factory.mktemp("small-model")
    result = train(small_config(tmp, nomenclatures_dir))
    return result


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point (errors included) and return (exit code, stdout, stderr)."""
    from autocode import cli

    monkeypatch.setattr(sys, "argv", ["autocode", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out = capsys.readouterr()
    return code, out.out, out.err


# -- real servers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, process: subprocess.Popen, log: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if check():
                return
        except Exception:  # not up yet
            time.sleep(0.2)
        time.sleep(0.3)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


S3_ACCESS_KEY = "autocode-test"
S3_SECRET_KEY = "autocode-test-secret-key"
BUCKET = "mlflow"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real S3 endpoint (SeaweedFS ``weed server``) that refuses anonymous access."""
    weed = VENV_BIN / "weed"
    if not weed.exists():
        weed = Path(shutil.which("weed") or "weed")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    (root / "logs").mkdir()
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "metricsPort",
        )
    }
    command = [
        str(weed),
        f"-logdir={root / 'logs'}",
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-volume.max=0",
        "-master.resumeState=false",
        "-master.volumeSizeLimitMB=64",
        "-filer",
        "-s3",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log = root / "weed.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    env = {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "MLFLOW_S3_ENDPOINT_URL": endpoint,
    }
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
            config=Config(signature_version="s3v4"),
        )

        def ready() -> bool:
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
            return True

        wait_for(ready, "SeaweedFS", process, log, timeout=90)
        yield {**env, "bucket": BUCKET}
    finally:
        stop(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, seaweedfs) -> Iterator[str]:
    """A real MLflow tracking server: SQLite backend, artifacts on SeaweedFS."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {
        **os.environ,
        **{k: v for k, v in seaweedfs.items() if k != "bucket"},
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        f"s3://{seaweedfs['bucket']}/artifacts",
        "--workers",
        "1",
    ]
    log = root / "mlflow.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{uri}/health", timeout=2).status_code == 200,
            "MLflow server",
            process,
            log,
            # measured 130 s to its first answer on the shared 2-core machine at load 8
            timeout=240,
        )
        yield uri
    finally:
        stop(process)


@pytest.fixture
def mlflow_env(monkeypatch, seaweedfs, mlflow_server) -> str:
    """The client side of the servers: tracking URI and S3 credentials in the environment."""
    for key, value in seaweedfs.items():
        if key != "bucket":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


# -- Label Studio ---------------------------------------------------------------------------------
LABEL_STUDIO_PASSWORD = "annotator-password-1"


def _label_studio_cache() -> Path:
    """The environment `make label-studio-env` builds (tools/label-studio; installed and
    migrated once, minutes, then instant): its directory."""
    built = subprocess.run(
        ["make", "-s", "--no-print-directory", "label-studio-env"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        pytest.fail(
            f"`make label-studio-env` failed:\n{built.stdout[-2000:]}{built.stderr[-2000:]}"
        )
    cache = Path(built.stdout.strip().splitlines()[-1])
    if not (cache / "template" / "label_studio.sqlite3").is_file():
        pytest.fail(f"`make label-studio-env` left no migrated template database in {cache}")
    return cache


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A real Label Studio (the label-studio package the catalog's recipe runs), started by the
    tests on loopback with SQLite in the session's folder: ``url``, and two annotators' e-mails
    and API tokens (``api_key``/``username``: the first; ``api_key_2``/``username_2``)."""
    cache = _label_studio_cache()
    venv = cache / "venv" / "bin"
    root = tmp_path_factory.mktemp("label-studio")
    data = root / "data"
    data.mkdir()
    shutil.copy(cache / "template" / "label_studio.sqlite3", data / "label_studio.sqlite3")
    (data / ".env").write_text("SECRET_KEY=autocode-tests-label-studio-secret-key\n")
    env = {
        "PATH": f"{venv}:/usr/bin:/bin",
        "HOME": str(root),
        "DJANGO_DB": "sqlite",
        "DJANGO_SETTINGS_MODULE": "label_studio.core.settings.label_studio",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "LATEST_VERSION_CHECK": "false",
    }
    users = {
        "username": "expert-a@localhost",
        "api_key": "expert-a-token-0001",
        "username_2": "expert-b@localhost",
        "api_key_2": "expert-b-token-0002",
    }
    log = root / "label-studio.log"
    for name, token in (("username", "api_key"), ("username_2", "api_key_2")):
        account = {
            "LABEL_STUDIO_USERNAME": users[name],
            "LABEL_STUDIO_PASSWORD": LABEL_STUDIO_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": users[token],
        }
        with log.open("a") as out:
            subprocess.run(
                [str(venv / "label-studio"), "init", "--quiet", "--no-browser"],
                env={**env, **account},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=600,
            )
    package = subprocess.run(
        [
            str(venv / "python"),
            "-c",
            "import os, label_studio; print(os.path.dirname(label_studio.__file__))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    command = [
        str(venv / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        package,
        "--workers",
        "1",
        "--threads",
        "4",
        "--timeout",
        "120",
        "--no-control-socket",
        "label_studio.core.wsgi:application",
    ]
    with log.open("a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200,
            "Label Studio",
            process,
            log,
            timeout=180,
        )
        yield {"url": url, "password": LABEL_STUDIO_PASSWORD, "log": str(log), **users}
    finally:
        stop(process)
