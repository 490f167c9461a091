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
