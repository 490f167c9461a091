"""Cached, locked virtual environments: the local backend's "images".

Layout under ``root`` (``<data_dir>/envs``)::

    <key>/                      the venv (relocatable), renamed into place once complete
    <key>/datalab-env.json      what it holds: requested and locked packages, interpreter, size
    .usage/<key>.json           last use and the services using it
    .specs/<spec-hash>          the key a recipe environment resolved to (like an image tag's
                                digest), so a warm launch does not run the resolver again
    .tmp-*/                     builds in progress

The key is a hash of the interpreter and of the requirements locked by ``uv pip compile``:
recipes that lock to the same set share one environment.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from datalab.envs._extras import (
    fetch_jars,
    maven_cache_dir,
    npm_install,
    parse_coordinate,
)
from datalab.envs._python import Interpreter, find_interpreter
from datalab.envs._uv import find_uv, run_uv, uv_environ
from datalab.errors import BackendError, EnvBuildError

log = logging.getLogger(__name__)

#: ``progress(phase, percent, message)``; phases: resolving, creating, installing, done.
#: May be a plain function or a coroutine function.
ProgressCallback = Callable[[str, float, str], Any]

#: what uv says when a locked version is missing from the index it reads
_STALE_INDEX = "there is no version of"
_METADATA = "datalab-env.json"
_ERROR_TAIL_LINES = 30


@dataclass(frozen=True)
class EnvSpec:
    """A recipe's ``environment``: requirement strings, an optional Python version, and what
    is installed beside the packages: Maven jars (``group:artifact:version``, into
    ``<env>/jars/``) and npm packages (into ``<env>/node/``, programs in ``bin/``)."""

    packages: tuple[str, ...] = ()
    python: str | None = None
    jars: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()

    @classmethod
    def from_recipe(cls, environment: dict[str, Any] | None) -> EnvSpec:
        environment = environment or {}
        packages = environment.get("packages") or []
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            raise BackendError("environment.packages: expected a list of requirement strings")
        python = environment.get("python")
        if python is not None and not re.fullmatch(r"\d+(\.\d+){0,2}", str(python)):
            raise BackendError(
                f"environment.python: expected a version like '3.11', got {python!r}"
            )
        extras = {}
        for name in ("jars", "npm"):
            items = environment.get(name) or []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise BackendError(f"environment.{name}: expected a list of strings")
            extras[name] = tuple(i.strip() for i in items if i.strip())
        for coordinate in extras["jars"]:
            parse_coordinate(coordinate)
        return cls(
            tuple(p.strip() for p in packages if p.strip()),
            str(python) if python else None,
            **extras,
        )

    def digest(self) -> str:
        described: dict[str, Any] = {"packages": list(self.packages), "python": self.python}
        described.update(self._extras())
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:24]

    def _extras(self) -> dict[str, list[str]]:
        """jars and npm when there are some (environments without them keep their keys)."""
        extras = (("jars", self.jars), ("npm", self.npm))
        return {name: list(items) for name, items in extras if items}


@dataclass(frozen=True)
class Env:
    """A ready environment."""

    key: str
    path: Path
    python_version: str
    locked: tuple[str, ...]  # pinned requirements, e.g. "jupyterlab==4.4.1"
    built: bool = False  # True when this call built it, False when it came from the cache

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"


@dataclass(frozen=True)
class EnvInfo:
    """One cached environment, for ``datalab envs list``."""

    key: str
    path: Path
    packages: tuple[str, ...]  # as requested by the recipe(s)
    locked: tuple[str, ...]
    python_version: str
    size_bytes: int
    created_at: datetime | None
    last_used: datetime | None
    services: tuple[str, ...] = field(default=())


class EnvManager:
    """Builds and caches environments under ``root``. One instance per platform process."""

    def __init__(
        self,
        root: Path,
        *,
        build_timeout_s: float = 900,
        shared: bool = False,
        uv: str | None = None,
        uv_env: dict[str, str] | None = None,
        maven_repository: str | None = None,
        maven_cache: Path | None = None,
    ) -> None:
        """``shared``: the environments are used by other (unprivileged) accounts, so they must
        link to an interpreter those accounts can run and be readable by them.
        ``maven_repository``: where ``environment.jars`` are downloaded from (a mirror on a
        closed network; None: Maven fetches them, as the machine's Maven is configured);
        ``maven_cache``: where jars downloaded from it are kept (default
        ``$XDG_CACHE_HOME/datalab/maven``)."""
        self.root = Path(root)
        self.maven_repository = maven_repository
        self.maven_cache = maven_cache or maven_cache_dir()
        self.build_timeout_s = build_timeout_s
        self.shared = shared
        self._uv = uv or find_uv()
        self._env = uv_environ(uv_env)
        self._locks: dict[str, asyncio.Lock] = {}

    # -- building -----------------------------------------------------------------------------

    async def ensure(
        self, spec: EnvSpec, progress: ProgressCallback | None = None, *, refresh: bool = False
    ) -> Env:
        """The environment for ``spec``, built if needed. ``refresh`` resolves the requirements
        again (new releases) instead of reusing what this spec resolved to last time."""
        self._prepare_root()
        lock = self._locks.setdefault(spec.digest(), asyncio.Lock())
        async with lock:
            if not refresh and (env := self._cached(spec)) is not None:
                self.touch(env.key)
                await _report(progress, "done", 100, f"environment {env.key} (cached)")
                return env
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.build_timeout_s):
                    env = await self._build(spec, progress)
            except TimeoutError:
                raise EnvBuildError(
                    f"building the environment timed out after {self.build_timeout_s:g} s "
                    f"(packages: {', '.join(spec.packages) or 'none'})"
                ) from None
            self.touch(env.key)
            elapsed = time.monotonic() - started
            verb = "built" if env.built else "found"
            await _report(progress, "done", 100, f"environment {env.key} {verb} in {elapsed:.1f} s")
            return env

    def _prepare_root(self) -> None:
        for sub in (self.root, self.root / ".usage", self.root / ".specs"):
            sub.mkdir(parents=True, exist_ok=True)
            if self.shared:
                os.chmod(sub, 0o755)  # noqa: S103 - read by the services' unprivileged accounts

    def _cached(self, spec: EnvSpec) -> Env | None:
        try:
            key = (self.root / ".specs" / spec.digest()).read_text().strip()
        except FileNotFoundError:
            return None
        return self._load(key)

    def _load(self, key: str, *, built: bool = False) -> Env | None:
        try:
            meta = json.loads((self.root / key / _METADATA).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return Env(
            key=key,
            path=self.root / key,
            python_version=meta["python_version"],
            locked=tuple(meta["locked"]),
            built=built,
        )

    async def _build(self, spec: EnvSpec, progress: ProgressCallback | None) -> Env:
        lines: list[str] = []
        reached = [0.0]  # progress only moves forward, whatever order uv's lines come in

        def collect(phase: str, percent: float) -> Callable[[str], None]:
            def on_line(line: str) -> None:
                lines.append(line)
                reached[0] = max(reached[0], _percent_of(line, percent))
                _report_nowait(progress, phase, reached[0], line)

            return on_line

        await _report(progress, "resolving", 0, f"resolving {len(spec.packages)} requirement(s)")
        try:
            interpreter = await find_interpreter(
                spec.python, shared=self.shared, uv=self._uv, env=self._env, cwd=self.root
            )
        except LookupError as exc:
            raise EnvBuildError(f"environment.python: {exc}") from None
        locked = await self._lock(spec, interpreter, collect("resolving", 10))
        key = _env_key(interpreter, locked, spec)
        if (env := self._load(key)) is not None:  # another recipe already locked to this set
            self._remember(spec, key)
            return env

        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.root))
        try:
            await _report(
                progress, "creating", 20, f"creating a venv with Python {interpreter.version}"
            )
            await self._uv_ok(
                ["venv", "--relocatable", "--python", interpreter.path, "--no-config",
                 "--color", "never", str(tmp)],
                collect("creating", 25),
                lines,
                "creating the virtual environment",
            )  # fmt: skip
            if locked:
                (tmp / "requirements.lock").write_text("\n".join(locked) + "\n")
                await _report(progress, "installing", 30, f"installing {len(locked)} package(s)")
                sync = ["pip", "sync", "--python", str(tmp / "bin" / "python"), "--no-config",
                        "--color", "never", str(tmp / "requirements.lock")]  # fmt: skip
                try:
                    await self._uv_ok(
                        sync, collect("installing", 30), lines, "installing the packages"
                    )
                except EnvBuildError as exc:
                    if _STALE_INDEX not in str(exc):
                        raise
                    # The lock names a version the index uv read for the install does not list:
                    # a package released a moment ago, whose older index page another uv process
                    # (a concurrent build) or a lagging mirror left in the shared cache.
                    # Revalidate the index pages once.
                    await self._uv_ok(
                        [*sync[:2], "--refresh", *sync[2:]],
                        collect("installing", 30),
                        lines,
                        "installing the packages",
                    )
            await self._install_extras(spec, tmp, progress, collect)
            meta = {
                "key": key,
                "packages": list(spec.packages),
                "python": interpreter.path,
                "python_version": interpreter.version,
                "locked": locked,
                **spec._extras(),
                "created_at": datetime.now(UTC).isoformat(),
                "size_bytes": _tree_size(tmp),
            }
            (tmp / _METADATA).write_text(json.dumps(meta, indent=2) + "\n")
            # mkdtemp made it private; the services' unprivileged accounts must read it
            os.chmod(tmp, 0o755)  # noqa: S103
            if self.shared:
                _readable_by_all(tmp)
            try:
                os.rename(tmp, self.root / key)
            except OSError:  # built concurrently by another process: keep theirs
                if self._load(key) is None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
        self._remember(spec, key)
        env = self._load(key, built=True)
        assert env is not None
        return env

    async def _install_extras(
        self,
        spec: EnvSpec,
        env: Path,
        progress: ProgressCallback | None,
        collect: Callable[[str, float], Callable[[str], None]],
    ) -> None:
        if spec.jars:
            await _report(progress, "installing", 90, f"fetching {len(spec.jars)} jar(s)")
            await fetch_jars(
                spec.jars,
                env / "jars",
                repository=self.maven_repository,
                cache=self.maven_cache,
                on_line=collect("installing", 90),
                environ=self._env,
            )
        if spec.npm:
            await _report(progress, "installing", 92, f"installing {len(spec.npm)} npm package(s)")
            await npm_install(
                spec.npm,
                env,
                environ=self._env,
                on_line=collect("installing", 92),
                umask=0o022 if self.shared else -1,
            )

    async def _lock(
        self, spec: EnvSpec, interpreter: Interpreter, on_line: Callable[[str], None]
    ) -> list[str]:
        """``uv pip compile``: the exact versions the requirements resolve to here and now."""
        if not spec.packages:
            return []
        lines: list[str] = []
        stdout = await self._uv_ok(
            ["pip", "compile", "--python", interpreter.path, "--no-header", "--no-annotate",
             "--no-config", "--color", "never", "-"],
            on_line,
            lines,
            "resolving the requirements",
            stdin="\n".join(spec.packages).encode(),
        )  # fmt: skip
        return [
            line.strip()
            for line in stdout.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]

    async def _uv_ok(
        self,
        args: list[str],
        on_line: Callable[[str], None],
        lines: list[str],
        doing: str,
        *,
        stdin: bytes | None = None,
    ) -> str:
        result = await run_uv(
            [self._uv, *args],
            env=self._env,
            cwd=self.root,
            stdin=stdin,
            on_line=on_line,
            # shared environments are read by the services' accounts: files 644, dirs 755
            umask=0o022 if self.shared else -1,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-_ERROR_TAIL_LINES:])
            raise EnvBuildError(f"environment build failed while {doing}:\n{tail}")
        return result.stdout

    def _remember(self, spec: EnvSpec, key: str) -> None:
        _write_atomic(self.root / ".specs" / spec.digest(), key + "\n")

    # -- usage --------------------------------------------------------------------------------

    def touch(self, key: str, *, add: str | None = None, remove: str | None = None) -> None:
        """Record a use of ``key`` now; ``add``/``remove`` a service id from its users."""
        path = self.root / ".usage" / f"{key}.json"
        try:
            usage = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            usage = {"services": []}
        services = set(usage.get("services", []))
        if add:
            services.add(add)
        if remove:
            services.discard(remove)
        usage = {"last_used": datetime.now(UTC).isoformat(), "services": sorted(services)}
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(usage) + "\n")

    def list(self) -> list[EnvInfo]:
        """Every complete environment, most recently used first."""
        infos: list[EnvInfo] = []
        if not self.root.is_dir():
            return infos
        for meta_path in self.root.glob(f"*/{_METADATA}"):
            key = meta_path.parent.name
            if key.startswith("."):
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            usage = self._usage(key)
            infos.append(
                EnvInfo(
                    key=key,
                    path=meta_path.parent,
                    packages=tuple(meta.get("packages", [])),
                    locked=tuple(meta.get("locked", [])),
                    python_version=meta.get("python_version", ""),
                    size_bytes=int(meta.get("size_bytes", 0)),
                    created_at=_parse_time(meta.get("created_at")),
                    last_used=_parse_time(usage.get("last_used")),
                    services=tuple(usage.get("services", [])),
                )
            )
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(infos, key=lambda i: i.last_used or i.created_at or epoch, reverse=True)

    def _usage(self, key: str) -> dict[str, Any]:
        try:
            usage: dict[str, Any] = json.loads((self.root / ".usage" / f"{key}.json").read_text())
            return usage
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def prune(
        self, older_than: timedelta | None = None, *, keep_in_use: bool = True
    ) -> builtins.list[str]:
        """Delete environments not used for ``older_than`` (None: any age), except, with
        ``keep_in_use``, those that installed services (running or suspended) still use.
        Returns the deleted keys. Also clears leftovers of interrupted builds."""
        now = datetime.now(UTC)
        removed: list[str] = []
        for info in self.list():
            if keep_in_use and info.services:
                continue
            last = info.last_used or info.created_at
            if older_than is not None and last is not None and now - last < older_than:
                continue
            _remove_tree(info.path)
            (self.root / ".usage" / f"{info.key}.json").unlink(missing_ok=True)
            removed.append(info.key)
        # Another process may be building right now: a build dir is a leftover only once it is
        # older than any build may last. Trash (half-deleted environments) always is.
        cutoff = time.time() - self.build_timeout_s - 60
        for leftover in self.root.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if leftover.name.startswith(".tmp-trash-") or leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)
        for pointer in (self.root / ".specs").glob("*"):
            with contextlib.suppress(OSError):
                if not (self.root / pointer.read_text().strip()).is_dir():
                    pointer.unlink()
        return removed


def _env_key(interpreter: Interpreter, locked: list[str], spec: EnvSpec) -> str:
    text = f"python={interpreter.path}@{interpreter.version}\n" + "\n".join(sorted(locked))
    for name, items in spec._extras().items():  # jars and npm packages are part of it too
        text += "".join(f"\n{name}:{item}" for item in items)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_COUNT = re.compile(r"^(Resolved|Prepared|Installed|Audited) \d+ package")
_PERCENT_AFTER = {"Resolved": 15, "Prepared": 85, "Installed": 98, "Audited": 98}


def _percent_of(line: str, default: float) -> float:
    """uv prints a summary line per step; they are the only progress it offers when piped."""
    match = _COUNT.match(line)
    return float(_PERCENT_AFTER[match.group(1)]) if match else default


async def _report(progress: ProgressCallback | None, phase: str, percent: float, msg: str) -> None:
    if progress is None:
        return
    result = progress(phase, percent, msg)
    if inspect.isawaitable(result):
        await result


def _report_nowait(progress: ProgressCallback | None, phase: str, percent: float, msg: str) -> None:
    if progress is None:
        return
    result = progress(phase, percent, msg)
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        _pending.add(task)
        task.add_done_callback(_pending.discard)


_pending: set[asyncio.Future[Any]] = set()


def _readable_by_all(root: Path) -> None:
    """Let every account read the tree (and run what its owner may run). uv hard-links the
    files of its cache into environments, and keeps the mode the cache entry was unpacked
    with: an entry a build under umask 077 unpacked (a private build, another program of the
    same account) would be unreadable by the services' accounts whatever this build's umask.
    The cache's copy gains the same bits, which is what later shared builds need too."""
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            path = Path(directory) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            wanted = mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
            if stat.S_ISDIR(mode) or mode & stat.S_IXUSR:
                wanted |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            if wanted != mode:
                os.chmod(path, stat.S_IMODE(wanted))


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _remove_tree(path: Path) -> None:
    """Make it disappear at once (rename), then delete: no half-deleted env is ever visible."""
    trash = path.with_name(f".tmp-trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None
