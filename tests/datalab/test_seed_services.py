"""The shipped catalog's services, launched through the API on the real local backend (per-user
accounts when the tests run as root) with the real embedded object storage, and used the way
their users use them: a query, a key, a file read from the user's S3, a page.

One platform for the module (SeaweedFS is shared by its tests); the services' environments are
kept across sessions (``conftest.SEED_ENVS``): a warm run only starts the services."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from datalab.db import Project

from .conftest import SEED_ENVS, ServedPlatform, served_local_platform, wait_for_phase

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class Seeds(ServedPlatform):
    """The served platform, with what the seed tests do on it."""

    def project_password(self, project: str = "user-alice") -> str:
        with self.platform.db.session() as session:
            row = session.get(Project, project)
            assert row is not None
            password = row.service_password
        assert password
        return str(password)

    async def launch(
        self, chart: str, name: str, timeout: float = 600, **body: Any
    ) -> dict[str, Any]:
        """Launch a chart of the shipped catalog; its details once running (values included)."""
        await self.alice.call(
            "POST",
            "/api/services",
            json={"catalog": "datalab", "chart": chart, "name": name, **body},
        )
        await wait_for_phase(self.alice, name, "running", timeout=timeout)
        details: dict[str, Any] = await self.alice.call("GET", f"/api/services/{name}")
        return details

    def workdir(self, name: str) -> Path:
        return self.platform.settings.data_dir / "services" / name / "work"

    async def upload(self, key: str, content: bytes) -> None:
        """An object in alice's bucket, through the platform's storage API."""
        path = f"/api/storage/buckets/user-alice/objects/{key}"
        await self.alice.call("PUT", path, content=content)

    async def run_code(self, service: dict[str, Any], code: str, kernel: str) -> str:
        """Run ``code`` in a new Jupyter kernel of the service, reached as a program reaches it
        through the platform (its bearer token; Jupyter's own token in the query); what it
        printed and returned."""
        name, token = service["id"], service["password"]
        base = f"/s/{name}/api/kernels"
        started = await self.alice.call(
            "POST", f"{base}?token={token}", json={"name": kernel}, expect=201
        )
        ws_url = self.url.replace("http", "ws") + f"{base}/{started['id']}/channels?token={token}"
        try:
            return await _execute(ws_url, self.alice.headers(), code)
        finally:
            await self.alice.call("DELETE", f"{base}/{started['id']}?token={token}", expect=204)


@pytest.fixture(scope="module")
async def seeds() -> AsyncIterator[Seeds]:
    async with served_local_platform("dl-seeds-") as served:
        yield Seeds(served.platform, served.url, served.http, served.alice)


async def _execute(ws_url: str, headers: dict[str, str], code: str) -> str:
    """Jupyter's messaging protocol over the kernel's channels: the text of the streams and
    results of one execution (an error fails the test with the kernel's traceback)."""
    msg_id = uuid.uuid4().hex
    request = {
        "header": {"msg_id": msg_id, "session": uuid.uuid4().hex, "username": "alice",
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }  # fmt: skip
    output = []
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps(request))
        async with asyncio.timeout(240):
            while True:
                message = json.loads(await ws.recv())
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    output.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    output.append(content["data"].get("text/plain", ""))
                elif kind == "error":
                    raise AssertionError("\n".join(content["traceback"]))
                elif kind == "status" and content["execution_state"] == "idle":
                    return "".join(output)


async def _connect_postgres(values: dict[str, Any], socket_dir: Path) -> psycopg.AsyncConnection:
    pg = values["postgresql"]
    for _ in range(50):  # the socket exists a moment before the server accepts sessions
        try:
            return await psycopg.AsyncConnection.connect(
                host=str(socket_dir),
                user=pg["username"],
                password=pg["password"],
                dbname=pg["database"],
                autocommit=True,
            )
        except psycopg.OperationalError as exc:
            if "starting up" not in str(exc):
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("PostgreSQL still starting up")


async def test_postgresql_with_the_project_password(seeds: Seeds) -> None:
    service = await seeds.launch("postgresql", "db", timeout=120)
    values = service["values"]
    # the injected credentials: the user's name, the project's password
    assert values["postgresql"]["username"] == "alice"
    assert values["postgresql"]["password"] == seeds.project_password()
    assert service["password"] == values["postgresql"]["password"]
    socket_dir = seeds.workdir("db").parent / "run"
    assert f"host={socket_dir}" in service["notes"]
    async with await _connect_postgres(values, socket_dir) as connection:
        await connection.execute("CREATE TABLE t (x int)")
        await connection.execute("INSERT INTO t VALUES (6), (7)")
        cursor = await connection.execute("SELECT current_user, current_database(), sum(x) FROM t")
        assert await cursor.fetchone() == ("alice", "defaultdb", 13)
        cursor = await connection.execute("SHOW listen_addresses")
        assert await cursor.fetchone() == ("",)  # no TCP port: the socket only
    # a wrong password is refused
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(
            host=str(socket_dir), user="alice", password="wrong-password", dbname="defaultdb"
        )
    assert (seeds.workdir("db") / "pgdata" / "PG_VERSION").exists()
    # the data outlives a suspension
    await seeds.alice.call("POST", "/api/services/db/suspend")
    await seeds.alice.call("POST", "/api/services/db/resume")
    await wait_for_phase(seeds.alice, "db", "running", timeout=120)
    async with await _connect_postgres(values, socket_dir) as connection:
        cursor = await connection.execute("SELECT count(*) FROM t")
        assert await cursor.fetchone() == (2,)
    await seeds.alice.call("DELETE", "/api/services/db")


async def _redis(socket: Path, *commands: list[str]) -> list[bytes]:
    """Send commands over Redis's protocol (RESP) on its Unix socket; the raw answers."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    answers = []
    try:
        for command in commands:
            parts = [f"*{len(command)}\r\n".encode()]
            for word in command:
                parts.append(f"${len(word.encode())}\r\n{word}\r\n".encode())
            writer.write(b"".join(parts))
            await writer.drain()
            line = await reader.readline()
            if line.startswith(b"$") and line != b"$-1\r\n":  # a bulk string follows
                line += await reader.readexactly(int(line[1:]) + 2)
            answers.append(line)
    finally:
        writer.close()
    return answers


async def test_redis_with_the_project_password(seeds: Seeds) -> None:
    service = await seeds.launch("redis", "cache", timeout=120)
    password = service["values"]["redis"]["password"]
    assert password == seeds.project_password() == service["password"]
    socket = seeds.workdir("cache").parent / "run" / "redis.sock"
    assert f"-s {socket}" in service["notes"]
    denied, wrong = await _redis(socket, ["GET", "k"], ["AUTH", "wrong-password"])
    assert denied.startswith(b"-NOAUTH") and wrong.startswith(b"-WRONGPASS")
    answers = await _redis(socket, ["AUTH", password], ["SET", "k", "hello"], ["GET", "k"])
    assert answers == [b"+OK\r\n", b"+OK\r\n", b"$5\r\nhello\r\n"]
    # the append-only file keeps it across a suspension
    await seeds.alice.call("POST", "/api/services/cache/suspend")
    await seeds.alice.call("POST", "/api/services/cache/resume")
    await wait_for_phase(seeds.alice, "cache", "running", timeout=60)
    assert (await _redis(socket, ["AUTH", password], ["GET", "k"]))[1] == b"$5\r\nhello\r\n"
    await seeds.alice.call("DELETE", "/api/services/cache")


CSV = b"city,population\nLyon,522\nNantes,320\nLille,236\n"


@pytest.mark.timeout(900)  # a cold build of its environment
async def test_r_reads_the_users_s3_through_the_kernel(seeds: Seeds) -> None:
    await seeds.upload("data/cities.csv", CSV)
    service = await seeds.launch("jupyter-r", "r-lab", timeout=400)
    s3 = service["values"]["s3"]
    assert s3["enabled"] is True and s3["credentialsUrl"]  # renewable credentials, from R too
    assert "s3_read_csv" in service["notes"]
    code = """
    cities <- s3_read_csv(paste0("s3://", Sys.getenv("S3_WORKING_DIRECTORY"), "data/cities.csv"))
    cat("total", sum(cities$population), "\\n")
    cat("keys", s3_ls("user-alice/data/"), "\\n")
    s3_put("user-alice/data/from-r.txt", charToRaw("written by R"))
    cat(R.version$major, "\\n")
    """
    output = await seeds.run_code(service, code, kernel="ir")
    assert "total 1078" in output and "keys data/cities.csv" in output
    assert output.strip().endswith("4")  # Debian's R 4.x
    download = await seeds.http.get(
        "/api/storage/buckets/user-alice/objects/data/from-r.txt", headers=seeds.alice.headers()
    )
    assert download.content == b"written by R"
    await seeds.alice.call("DELETE", "/api/services/r-lab")


@pytest.mark.timeout(900)  # a cold build of its environment (pyspark: 320 MB)
async def test_pyspark_reads_the_users_s3_through_s3a(seeds: Seeds) -> None:
    await seeds.upload("data/spark/cities.csv", CSV)
    service = await seeds.launch("jupyter-pyspark", "spark", timeout=600)
    assert service["values"]["s3"]["credentialsUrl"]  # renewable credentials, in the JVM too
    code = """
import os
from pyspark.sql import SparkSession, functions as F
spark = SparkSession.builder.getOrCreate()
path = "s3a://" + os.environ["S3_WORKING_DIRECTORY"] + "data/spark/cities.csv"
df = spark.read.option("header", True).option("inferSchema", True).csv(path)
print("rows", df.count(), "total", df.agg(F.sum("population")).first()[0])
df.where(df.population > 300).write.mode("overwrite").parquet(
    "s3a://" + os.environ["S3_WORKING_DIRECTORY"] + "data/spark/big.parquet")
print("spark", spark.version)
print("ui", spark.sparkContext.uiWebUrl, "authenticate", spark.conf.get("spark.authenticate"))
jvm = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
sockets = set()
for fd in os.listdir(f"/proc/{jvm}/fd"):
    try:
        sockets.add(os.readlink(f"/proc/{jvm}/fd/{fd}"))
    except FileNotFoundError:  # closed meanwhile
        pass
for table in ("tcp", "tcp6"):
    for line in open(f"/proc/{jvm}/net/{table}").readlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and f"socket:[{fields[9]}]" in sockets:
            print("listens", fields[1].rsplit(":", 1)[0])
"""
    output = await seeds.run_code(service, code, kernel="python3")
    assert "rows 3 total 1078" in output and "spark 3.5." in output
    # the driver: no web UI, its ports on loopback only and behind a secret of the service's
    assert "ui None authenticate true" in output
    addresses = [line.split()[1] for line in output.splitlines() if line.startswith("listens")]
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert addresses and set(addresses) <= loopback, output
    listing = await seeds.alice.call(
        "GET", "/api/storage/buckets/user-alice/objects", params={"prefix": "data/spark/"}
    )
    assert "data/spark/big.parquet/" in listing["folders"]
    await seeds.alice.call("DELETE", "/api/services/spark")


@pytest.mark.timeout(2400)  # a cold build compiles code-server's native modules
async def test_vscode_workbench_through_the_platform(seeds: Seeds) -> None:
    service = await seeds.launch("vscode", "code", timeout=1800)
    password = service["password"]
    assert password == service["values"]["security"]["password"]
    base, auth = "/s/code", seeds.alice.headers()
    # code-server's own lock: its login page until its password is given
    first = await seeds.http.get(f"{base}/", headers=auth)
    assert first.status_code == 302 and "login" in first.headers["location"]
    login = await seeds.http.post(
        f"{base}/login", headers=auth, data={"password": password, "base": "."}
    )
    assert login.status_code == 302, login.text
    cookies = {name: value for name, value in login.cookies.items()}
    assert any(name.startswith("code-server-session") for name in cookies)
    async with httpx.AsyncClient(base_url=seeds.url, cookies=cookies, trust_env=False) as http:
        opened = await http.get(f"{base}/", headers=auth)  # signed in: to the work directory
        workdir = seeds.workdir("code")
        assert opened.status_code == 302 and opened.headers["location"] == f"./?folder={workdir}"
        page = await http.get(f"{base}/", params={"folder": str(workdir)}, headers=auth)
    assert page.status_code == 200
    assert "vscode-workbench" in page.text or "workbench" in page.text
    # the service runs from the environment's code-server, Node.js 24 from PyPI
    env_key = seeds.platform.backend.get_state("code")["env_key"]
    bin_dir = SEED_ENVS / env_key / "bin"
    assert (bin_dir / "code-server").exists() and (bin_dir / "node").exists()
    await seeds.alice.call("DELETE", "/api/services/code")
