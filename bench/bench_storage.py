"""Upload and download of a large file through the platform's storage API vs boto3 straight to
the embedded SeaweedFS, in the same run, with the platform's memory (RSS) sampled meanwhile.

The platform is a real `datalab up` subprocess (embedded SeaweedFS, memory backend, secrets off);
its RSS excludes its children (SeaweedFS). boto3 uses the same user's STS credentials with its
default transfer settings (multipart, 10 threads). Targets: platform throughput >= 0.8x boto3
direct, platform RSS <= 150 MB during transfers. Size: BENCH_STORAGE_MB (default 1024).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psutil
from botocore.config import Config

SIZE_MB = int(os.environ.get("BENCH_STORAGE_MB", "1024"))
CHUNK = 1024 * 1024
PASSWORD = "bench-admin-password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RssSampler:
    """Peak resident memory of one process (not its children), sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="datalab-bench-storage-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATALAB_DATA_DIR": str(root / "data"),
        "DATALAB_SERVER__PORT": str(port),
        "DATALAB_BACKEND__NAME": "memory",
        "DATALAB_SECRETS__MODE": "disabled",
        "DATALAB_STORAGE__MODE": "embedded",
        "DATALAB_STORAGE__MAX_UPLOAD_BYTES": str((SIZE_MB + 1) * CHUNK),
        "DATALAB_ADMIN_PASSWORD": PASSWORD,
        "DATALAB_LOG_LEVEL": "warning",
    }
    log = (root / "up.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "datalab", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    source = root / "payload.bin"
    try:
        with source.open("wb") as handle:
            for _ in range(SIZE_MB):
                handle.write(os.urandom(CHUNK))
        _wait_ready(url, server, root / "up.log")
        token = httpx.post(
            f"{url}/api/auth/token",
            json={"username": "admin", "password": PASSWORD, "token_name": "bench"},
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        credentials = httpx.get(f"{url}/api/storage/credentials", headers=headers).json()
        bucket = credentials["bucket"]
        object_url = f"{url}/api/storage/buckets/{bucket}/objects"
        size = source.stat().st_size
        timeout = httpx.Timeout(None, connect=10)
        idle_rss = psutil.Process(server.pid).memory_info().rss

        with RssSampler(server.pid) as upload_rss:
            upload_s = _timed(
                lambda: httpx.put(
                    f"{object_url}/via-platform.bin",
                    content=_file_chunks(source),
                    headers={**headers, "Content-Length": str(size)},
                    timeout=timeout,
                ).raise_for_status()
            )

        def download() -> None:
            received = 0
            with httpx.stream(
                "GET", f"{object_url}/via-platform.bin", headers=headers, timeout=timeout
            ) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes(CHUNK):
                    received += len(chunk)
            assert received == size, (received, size)

        with RssSampler(server.pid) as download_rss:
            download_s = _timed(download)

        issued = credentials["credential_process"]
        s3 = boto3.client(
            "s3",
            endpoint_url=credentials["endpoint_url"],
            region_name=credentials["region"],
            aws_access_key_id=issued["AccessKeyId"],
            aws_secret_access_key=issued["SecretAccessKey"],
            aws_session_token=issued["SessionToken"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        direct_upload_s = _timed(lambda: s3.upload_file(str(source), bucket, "direct.bin"))
        target = root / "downloaded.bin"
        direct_download_s = _timed(lambda: s3.download_file(bucket, "direct.bin", str(target)))
        target.unlink()

        def mb_s(seconds: float) -> float:
            return round(size / CHUNK / seconds, 1)

        return {
            "size_mb": SIZE_MB,
            "upload_platform_mb_s": mb_s(upload_s),
            "upload_boto3_direct_mb_s": mb_s(direct_upload_s),
            "upload_ratio": round(direct_upload_s / upload_s, 2),
            "download_platform_mb_s": mb_s(download_s),
            "download_boto3_direct_mb_s": mb_s(direct_download_s),
            "download_ratio": round(direct_download_s / download_s, 2),
            "platform_idle_rss_mb": round(idle_rss / CHUNK, 1),
            "platform_peak_rss_upload_mb": round(upload_rss.peak / CHUNK, 1),
            "platform_peak_rss_download_mb": round(download_rss.peak / CHUNK, 1),
            "targets": {"ratio_min": 0.8, "rss_max_mb": 150},
        }
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise RuntimeError(f"datalab up exited with code {server.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("datalab up did not become ready in 120 s")


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
