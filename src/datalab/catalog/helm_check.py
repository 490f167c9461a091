"""Helm's own check of a chart at load time (Helm loads it and renders it with its default
values), run in a short-lived child process and cached by the chart's content digest.

Why a child: helm-python embeds Helm's Go runtime, about 60 MB of resident memory (42 MB of it
the mapped library) that would stay in the platform for good after the first chart. The check
runs once per chart content per machine (cache in ``$XDG_CACHE_HOME/datalab/helm-checks``);
rendering for users happens in ``helm`` itself (Kubernetes backend) or not at all (local
backend).

This file runs as a script in the child (``python -I helm_check.py CHART_DIR...``): it must
import nothing from datalab at module level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import platformdirs

CACHE_VERSION = "3"
_CHILD_FAILED = "Helm could not check it"  # not cached: the next load tries again
CHILD_TIMEOUT_S = 120
# How Helm reports a template's own `required` or `fail`: the chart asks for values its
# defaults do not give, which is for the user to give at launch. Every other render error
# (a template that does not parse, an `include` of a template no chart defines, a missing
# dependency, a nil pointer in the defaults) is the chart's, and makes it broken.
_VALUES_REQUIRED = "execution error at ("


def cache_dir() -> Path:
    return platformdirs.user_cache_path("datalab") / "helm-checks"


def check_templates(path: Path, chart: str, digest: str) -> None:
    """Raise ``ChartInvalid`` when Helm cannot load the chart or cannot render it with its
    default values (other than by the chart's own ``required``/``fail``)."""
    from datalab.errors import ChartInvalid

    [problem] = checked([(path, digest)])
    if problem:
        raise ChartInvalid(f"chart {chart!r}: {problem}")


def checked(charts: list[tuple[Path, str]]) -> list[str | None]:
    """Helm's verdict on each ``(chart directory, content digest)``: None or the problem.
    The charts not in the cache are checked together, in one child process (a catalog
    directory of 200 new charts: one child, not 200)."""
    verdicts: list[str | None] = [None] * len(charts)
    missing: list[int] = []
    for index, (_, digest) in enumerate(charts):
        try:
            verdicts[index] = json.loads(_cache_file(digest).read_text())["problem"]
        except (OSError, ValueError, KeyError):
            missing.append(index)
    if missing:
        problems = _run_child([charts[index][0] for index in missing])
        for index, problem in zip(missing, problems, strict=True):
            verdicts[index] = problem
            if not problem or not problem.startswith(_CHILD_FAILED):
                _store(_cache_file(charts[index][1]), problem)
    return verdicts


def _cache_file(digest: str) -> Path:
    return cache_dir() / f"{CACHE_VERSION}-{digest}.json"


def _run_child(paths: list[Path]) -> list[str | None]:
    try:
        done = subprocess.run(
            [sys.executable, "-I", __file__, *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S + len(paths),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"{_CHILD_FAILED}: {exc}"] * len(paths)
    try:
        problems: list[str | None] = json.loads(done.stdout)["problems"]
        if len(problems) != len(paths):
            raise ValueError("one verdict per chart expected")
    except (ValueError, KeyError, TypeError):
        detail = done.stderr.strip()[-500:] or f"exit code {done.returncode}"
        return [f"{_CHILD_FAILED}: {detail}"] * len(paths)
    return problems


def _store(cached: Path, problem: str | None) -> None:
    """Atomically, best effort: a read-only cache only costs a re-check."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cached.parent, delete=False) as handle:
            json.dump({"problem": problem}, handle)
        os.replace(handle.name, cached)
    except OSError:
        pass


def _problem(path: Path) -> str | None:
    """In the child: what Helm says is wrong with the chart, or None."""
    import helm_python

    try:
        with helm_python.Chart.load(path) as loaded:
            loaded.render(None, name="catalog-check", namespace="catalog-check")
    except helm_python.HelmChartLoadError as exc:
        return f"Helm cannot load it: {exc}"
    except helm_python.HelmRenderError as exc:
        if "parse error" in str(exc):
            return f"broken template: {exc}"
        if not str(exc).startswith(_VALUES_REQUIRED):
            return f"Helm cannot render it with its default values: {exc}"
    except helm_python.HelmError as exc:
        return f"Helm cannot render it: {exc}"
    return None


if __name__ == "__main__":
    print(json.dumps({"problems": [_problem(Path(arg)) for arg in sys.argv[1:]]}))
