"""The layer rule of docs/architecture.md, enforced: the code keeps every import-linter contract
of pyproject.toml ([tool.importlinter]), and each contract fails on an import that breaks it
(checked on a copy of the code with one violating import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` in ``root`` (its pyproject.toml), on the packages of ``root``/src."""
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache", "--no-logo", *selected],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_code_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


#: case -> (contract id, file, the import added to it, which breaks the contract, what the
#: report names)
VIOLATIONS = {
    "a lower layer imports a higher one": (
        "datalab-layers",
        "src/datalab/errors.py",
        "import datalab.services",
        "datalab.services",
    ),
    "the web UI imports the API": (
        "datalab-layers",
        "src/datalab/web/i18n.py",
        "import datalab.api",
        "datalab.api",
    ),
    "storage imports secrets (independent layers)": (
        "datalab-layers",
        "src/datalab/storage/keys.py",
        "import datalab.secrets.store",
        "datalab.secrets.store",
    ),
    "a cycle inside a package": (
        "no-cycles",
        "src/datalab/storage/keys.py",
        "import datalab.storage.objects",
        "No cycles are allowed in datalab.storage.",
    ),
    "the model imports its MLflow wrapper": (
        "autocode-layers",
        "src/autocode/model/base.py",
        "import autocode.pyfunc",
        "autocode.pyfunc",
    ),
    "autocode imports datalab": (
        "platform-and-application",
        "src/autocode/data.py",
        "import datalab.errors",
        "datalab.errors",
    ),
    "an autocode test imports datalab": (
        "autocode-tests",
        "tests/autocode/test_example.py",
        "import datalab.catalog",
        "datalab.catalog",
    ),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_a_violating_import_breaks_its_contract(tmp_path: Path, case: str) -> None:
    contract, path, statement, named = VIOLATIONS[case]
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tests" / "autocode").mkdir(parents=True)
    (tmp_path / "tests" / "autocode" / "test_example.py").write_text("import autocode\n")
    target = tmp_path / path
    target.write_text(target.read_text() + f"\n{statement}  # noqa\n")
    result = lint_imports(tmp_path, contract)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert named in result.stdout
