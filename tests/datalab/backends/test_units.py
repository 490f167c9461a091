"""Pure parts of the local backend (quantities, recipe rendering, account names, log files)
and the in-memory backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalab.backends.base import BackendError, Phase, ServiceNotFound, ServiceSpec
from datalab.backends.local.accounts import account_name
from datalab.backends.local.backend import _missing_binaries
from datalab.backends.local.logs import rotate_if_needed, tail_lines
from datalab.backends.local.recipe import render_recipe, resolve_command
from datalab.backends.memory import MemoryBackend
from datalab.resources import Resources, parse_cpu, parse_memory_bytes

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("quantity", "cores"), [("100m", 0.1), ("2", 2.0), (1.5, 1.5), ("0.5", 0.5), (3, 3.0)]
)
def test_parse_cpu(quantity: object, cores: float) -> None:
    assert parse_cpu(quantity) == cores


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("512Mi", 512 * 2**20), ("2Gi", 2 * 2**30), ("1G", 10**9), ("1.5Gi", 3 * 2**29),
     (1048576, 2**20), ("1e6", 10**6), ("100k", 10**5)],
)  # fmt: skip
def test_parse_memory(quantity: object, size: int) -> None:
    assert parse_memory_bytes(quantity) == size


@pytest.mark.parametrize("bad", ["lots", "2 cores", "-1", "0", True, None, "1Qi"])
def test_bad_quantities_name_the_key(bad: object) -> None:
    with pytest.raises(BackendError, match=r"resources\.limits\.memory"):
        Resources.from_values({"resources": {"limits": {"memory": bad or "x"}}})


def test_resources_for_quotas() -> None:
    values = {
        "resources": {
            "requests": {"cpu": "100m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        }
    }
    assert Resources.from_values(values).to_status() == {
        "cpu": 0.1,
        "memory_mb": 512,
        "cpu_limit": 2.0,
        "memory_limit_mb": 2048,
    }
    # as in Kubernetes, a request defaults to the limit
    limited = Resources.from_values({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})
    assert limited.to_status() == {
        "cpu": 1.0,
        "memory_mb": 1024,
        "cpu_limit": 1.0,
        "memory_limit_mb": 1024,
    }
    assert Resources.from_values({}).to_status() == {}
    with pytest.raises(BackendError, match=r"larger than limits\.cpu"):
        Resources.from_values({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}})


CONTEXT = {
    "values": {"security": {"password": "pw"}, "s3": {"enabled": False, "url": "http://s3"}},
    "service": {
        "id": "svc",
        "port": 1234,
        "socket": "/d/services/svc/run/http.sock",
        "socket_dir": "/d/services/svc/run",
        "base_url": "/",
        "url": "http://svc.h/",
    },
    "env_dir": "/envs/k",
}


def test_render_recipe() -> None:
    recipe = {
        "command": ["jupyter", "--port={{ service.port }}", "--dir={{ env_dir }}"],
        "env": {
            "TOKEN": "{{ values.security.password }}",
            "AWS_ENDPOINT_URL": "{{ values.s3.url if values.s3.enabled else '' }}",
        },
        "readiness": {"http": "{{ service.base_url }}api", "timeout": 30},
        "url": "{{ service.url }}lab",
        "password": "{{ values.security.password }}",
        "notes": "Hello {{ service.id }}",
    }
    rendered = render_recipe(recipe, CONTEXT)
    assert rendered.command == ["jupyter", "--port=1234", "--dir=/envs/k"]
    assert rendered.env == {"TOKEN": "pw"}  # "" means unset
    assert rendered.readiness_http == "/api" and rendered.readiness_tcp is None
    assert rendered.readiness_timeout_s == 30 and rendered.listen == "tcp"
    assert (rendered.url, rendered.password, rendered.notes) == (
        "http://svc.h/lab",
        "pw",
        "Hello svc",
    )

    tcp = render_recipe({"command": ["x"], "readiness": {"tcp": True}}, CONTEXT)
    assert tcp.readiness_tcp == 1234 and tcp.readiness_timeout_s == 180

    unix = render_recipe({"command": ["x", "{{ service.socket }}"], "listen": "unix"}, CONTEXT)
    assert unix.command == ["x", "/d/services/svc/run/http.sock"] and unix.listen == "unix"
    assert unix.readiness_tcp is None and unix.readiness_http is None  # the socket is probed
    with pytest.raises(BackendError, match=r"readiness\.tcp needs 'listen: tcp'"):
        render_recipe({"command": ["x"], "listen": "unix", "readiness": {"tcp": True}}, CONTEXT)
    assert render_recipe({"command": ["x"]}, CONTEXT).readiness_tcp == 1234

    # a server that names its own socket in service.socket_dir (PostgreSQL, Redis)
    own = {"unix": "{{ service.socket_dir }}/.s.PGSQL.5432"}
    named = render_recipe({"command": ["x"], "listen": "unix", "readiness": own}, CONTEXT)
    assert named.readiness_unix == "/d/services/svc/run/.s.PGSQL.5432"
    assert named.readiness_http is None and named.readiness_tcp is None
    with pytest.raises(BackendError, match=r"readiness\.unix needs 'listen: unix'"):
        render_recipe({"command": ["x"], "readiness": own}, CONTEXT)
    with pytest.raises(BackendError, match="absolute path"):
        render_recipe({"command": ["x"], "listen": "unix", "readiness": {"unix": "s"}}, CONTEXT)


def test_required_binaries_on_path_or_at_a_pattern(tmp_path: Path) -> None:
    server = tmp_path / "lib" / "15" / "bin" / "postgres"
    server.parent.mkdir(parents=True)
    server.write_text("#!/bin/sh\n")
    recipe = {"environment": {"requires_binaries": ["sh", f"{tmp_path}/lib/*/bin/postgres"]}}
    missing = _missing_binaries(recipe, "pg") or ""
    assert missing.startswith(f"chart 'pg' needs {tmp_path}/lib/*/bin/postgres, not found")
    server.chmod(0o755)
    assert _missing_binaries(recipe, "pg") is None
    recipe["environment"]["requires_binaries"].append("no-such-program-here")
    assert "needs no-such-program-here" in (_missing_binaries(recipe, "pg") or "")


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (
            {"command": ["{{ values.nope }}"]},
            r"command\[0\]: 'dict object' has no attribute 'nope'",
        ),
        ({"command": ["x"], "env": {"A": "{{ oops }}"}}, r"env\.A: 'oops' is undefined"),
        ({"command": ["{% if %}"]}, r"command\[0\]: template syntax error"),
        ({"command": ["{{ values.__class__.__mro__ }}"]}, r"command\[0\]"),
        ({"command": ["{{ values.security.update({}) }}"]}, r"command\[0\]: not allowed"),
        ({"command": []}, "non-empty list"),
        ({"command": ["x"], "readiness": {"tcp": "port"}}, "must render to a port"),
    ],
)
def test_render_errors_name_the_template(recipe: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        render_recipe(recipe, CONTEXT)


def test_resolve_command(tmp_path: Path) -> None:
    (tmp_path / "tool").write_text("")
    (tmp_path / "tool").chmod(0o755)
    assert resolve_command("tool", str(tmp_path), "/usr/bin:/bin") == str(tmp_path / "tool")
    assert resolve_command("sh", str(tmp_path), "/usr/bin:/bin").endswith("/sh")
    with pytest.raises(BackendError, match="'nope' is neither"):
        resolve_command("nope", str(tmp_path), "/usr/bin:/bin")


def test_account_names() -> None:
    assert account_name("alice") == "datalab-alice"
    assert account_name("Alice").startswith("datalab-alice-")
    assert account_name("alice") != account_name("Alice")
    long = account_name("a-very-long-user-name-that-does-not-fit")
    assert len(long) <= 32 and long.startswith("datalab-a-very")
    assert account_name("jean.dupont@insee.fr").startswith("datalab-jean-dupont-insee-fr"[:23])


def test_log_rotation_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert not rotate_if_needed(log, 10_000, 2)
    assert rotate_if_needed(log, 100, 2)
    assert log.stat().st_size == 0 and (tmp_path / "service.log.1").exists()
    log.write_text("fresh\n")
    assert tail_lines(log, 3) == ["line 98", "line 99", "fresh"]
    rotate_if_needed(log, 1, 2)
    rotate_if_needed(log.with_name("service.log"), 1, 2)  # nothing to rotate: empty
    assert (tmp_path / "service.log.2").exists() and not (tmp_path / "service.log.3").exists()


async def test_memory_backend_runs_nothing_but_keeps_the_contract() -> None:
    backend = MemoryBackend()
    spec = ServiceSpec(
        id="svc", owner="alice", project="user-alice", catalog_id="c", chart_name="x",
        chart_version="1", chart_dir=Path("/nonexistent"),
        values={"resources": {"requests": {"cpu": "500m"}}},
    )  # fmt: skip
    status = await backend.install(spec)
    assert status.phase is Phase.RUNNING and status.resources == {"cpu": 0.5}
    lines = [line async for line in backend.logs("svc")]
    assert lines[-1].endswith("memory backend, nothing runs")
    assert (await backend.suspend("svc")).phase is Phase.SUSPENDED
    state = backend.get_state("svc")
    other = MemoryBackend()
    assert (await other.load_state(spec, state)).phase is Phase.SUSPENDED
    assert (await other.resume("svc")).phase is Phase.RUNNING
    assert [e.reason for e in await other.events("svc")] == ["Started", "Suspended", "Resumed"]
    assert await other.endpoint("svc") is None
    await other.uninstall("svc")
    await other.uninstall("svc")
    assert await other.list() == []
    with pytest.raises(ServiceNotFound):
        await other.status("svc")


def test_cgroup_files_written(tmp_path: Path) -> None:
    """The kernel interface is files: checked on a plain directory tree for the version this
    machine may not offer (v2 here has no memory/cpu controllers; v1 is tested for real)."""
    from datalab.backends.local.limits import CgroupV1Limiter, CgroupV2Limiter, _try_v2

    resources = Resources(cpu_request=0.5, cpu_limit=1.5, memory_limit=2**30)
    v2 = CgroupV2Limiter(tmp_path / "v2")
    confinement = v2.prepare("svc", resources)
    group = tmp_path / "v2" / "svc"
    assert (group / "memory.max").read_text() == str(2**30)
    assert (group / "cpu.max").read_text() == "150000 100000"
    assert (group / "cpu.weight").read_text() == "50"
    assert confinement.cgroup_procs == (str(group / "cgroup.procs"),)
    v2.prepare("open", Resources())
    assert (tmp_path / "v2" / "open" / "memory.max").read_text() == "max"
    assert (tmp_path / "v2" / "open" / "cpu.max").read_text() == "max 100000"

    v1 = CgroupV1Limiter(tmp_path / "memory", tmp_path / "cpu")
    v1.prepare("svc", resources)
    assert (tmp_path / "memory" / "svc" / "memory.limit_in_bytes").read_text() == str(2**30)
    assert (tmp_path / "cpu" / "svc" / "cpu.cfs_quota_us").read_text() == "150000"
    assert (tmp_path / "cpu" / "svc" / "cpu.shares").read_text() == "512"

    root = tmp_path / "unified"
    (root / "platform").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids")
    (root / "platform" / "cgroup.controllers").write_text("cpu memory pids")
    limiter = _try_v2(root, "/platform")
    assert limiter is not None and limiter.base == root / "platform" / "datalab"
    assert (limiter.base / "cgroup.subtree_control").read_text() == "+memory +cpu"
    (root / "platform" / "cgroup.controllers").write_text("pids")
    assert _try_v2(root, "/platform") is None  # controllers not delegated: fall back


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    import asyncio

    from datalab.backends.local.logs import follow_lines

    log = tmp_path / "service.log"
    log.write_text("old 1\nold 2\n")
    seen: list[str] = []

    async def follow() -> None:
        async for line in follow_lines(log, 1, lambda: True):
            seen.append(line)
            if line == "new 2":
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.3)
    with open(log, "a") as handle:
        handle.write("before rotation\n")
    await asyncio.sleep(0.3)
    rotate_if_needed(log, 1, 1)
    with open(log, "a") as handle:  # O_APPEND, as the service writes
        handle.write("new 1\nnew 2\n")
    await asyncio.wait_for(task, 5)
    assert seen == ["old 2", "before rotation", "new 1", "new 2"]
