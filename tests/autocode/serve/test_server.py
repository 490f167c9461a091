"""A real server process (uvicorn) under load: killed with SIGKILL then restarted, nothing
answered is lost and nothing is duplicated in S3; a promotion under load fails no request."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from .conftest import LoadGenerator, s3_records, set_alias, spool_records

pytestmark = pytest.mark.slow


def test_kill_9_under_load_loses_no_answered_prediction(
    server_factory, model_dir, credentials, seaweedfs, tmp_path
) -> None:
    env = {k: v for k, v in seaweedfs.items() if k != "bucket"}
    prefix = f"crash-{uuid.uuid4().hex[:8]}"
    env.update(
        {
            "AUTOCODE_API_API_KEYS_FILE": str(credentials.keys_file),
            "AUTOCODE_API_LOG_S3_URI": f"s3://{seaweedfs['bucket']}/{prefix}",
            "AUTOCODE_API_LOG_SEGMENT_MAX_AGE_S": "0.4",  # segments sealed and shipped under load
            "AUTOCODE_API_LOG_SHIP_INTERVAL_S": "0.2",
            "AUTOCODE_API_LOG_SHIP_RETRY_MAX_S": "1",
        }
    )
    spool = tmp_path / "spool"
    args = ["--model", str(model_dir), "--log-dir", str(spool)]
    server = server_factory(args, env).start()
    server.wait_ready()

    load = LoadGenerator(server.url, credentials.headers, threads=4).start()
    time.sleep(2.0)
    server.kill()  # SIGKILL while requests are in flight: no shutdown code runs
    load.stop()
    answered = {a["id"] for a in load.answered}
    assert len(answered) >= 100, f"too little load to mean anything: {len(answered)}"

    # the segment being written at the kill (if any) is recovered at the restart

    restarted = server_factory(args, env, port=server.port).start()
    restarted.wait_ready()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        keys, records = s3_records(env, seaweedfs["bucket"], prefix)
        if answered <= {r["id"] for r in records} and not list((spool / "sealed").iterdir()):
            break
        time.sleep(0.3)
    ids = [r["id"] for r in records]
    missing = answered - set(ids)
    assert not missing, f"{len(missing)} answered predictions have no record in S3"
    assert len(ids) == len(set(ids)), "a record was shipped twice"
    # records of requests the kill interrupted after their fsync may exist: a superset, no less
    assert len(ids) >= len(answered)
    assert all(k.startswith(f"{prefix}/date=") and k.endswith(".jsonl") for k in keys)
    restarted.stop()


def test_promotion_under_load_fails_no_request(
    server_factory, registry_env, credentials, tmp_path
) -> None:
    name = registry_env["name"]
    first, second = (v["version"] for v in registry_env["versions"])
    set_alias(registry_env, "champion", first)
    env = {
        **registry_env["env"],
        "MLFLOW_TRACKING_URI": registry_env["tracking_uri"],
        "AUTOCODE_API_API_KEYS_FILE": str(credentials.keys_file),
        "AUTOCODE_API_POLL_INTERVAL_S": "0.3",
    }
    spool = tmp_path / "spool"
    server = server_factory(["--model", f"models:/{name}@champion", "--log-dir", str(spool)], env)
    server.start()
    assert server.wait_ready()["model"]["version"] == first

    load = LoadGenerator(server.url, credentials.headers, threads=3).start()
    time.sleep(1.0)
    set_alias(registry_env, "champion", second)  # the promotion
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(a["version"] == second for a in load.answered[-50:]):
            break
        time.sleep(0.1)
    time.sleep(1.0)  # keep going on the new version a little
    load.stop()
    server.stop()  # graceful: the spool is sealed

    assert load.failures == [], load.failures[:5]
    versions = [a["version"] for a in load.answered]
    assert versions.count(first) >= 5 and versions.count(second) >= 5
    for thread in range(3):  # the swap is atomic: once a client saw v2, it never sees v1 again
        seen = [a["version"] for a in load.answered if a["thread"] == thread]
        assert seen == sorted(seen, key=lambda v: v == second), f"thread {thread} went back"
    records = {r["id"]: r["model"]["version"] for r in spool_records(spool)}
    for answer in load.answered:
        assert records[answer["id"]] == answer["version"]


def test_serves_on_a_unix_socket(server_factory, model_dir, credentials, tmp_path) -> None:
    """--uds (how the platform runs it: only the platform can connect) instead of a port."""
    socket_path = tmp_path / "api.sock"
    args = ["--model", str(model_dir), "--log-dir", str(tmp_path / "spool")]
    env = {"AUTOCODE_API_API_KEYS_FILE": str(credentials.keys_file)}
    server = server_factory([*args, "--uds", str(socket_path)], env).start()
    deadline = time.monotonic() + 90
    while not socket_path.exists():  # (connecting before it exists leaks httpcore's socket)
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.1)
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://api", timeout=5) as client:
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, server.tail()
            time.sleep(0.2)
        answer = client.get("/predict", params={"text": "boulangerie"}, headers=credentials.headers)
        assert answer.status_code == 200, answer.text
    with pytest.raises(httpx.TransportError):  # and nothing on the port
        httpx.get(f"{server.url}/health", timeout=2)
