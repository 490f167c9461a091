"""Local recipes from an overlay: a ``local.yaml`` for a chart of a catalog that is not ours
(Onyxia's ``jupyter-python``, ``vscode-python``...), so that an administrator runs it on the
local backend without forking it.

A catalog's ``local_recipes`` names a directory holding ``<chart name>/local.yaml``: a path, or
the bare name of an overlay shipped in ``catalog/overlays/`` (``onyxia``: for
InseeFrLab/helm-charts-interactive-services). An overlay's recipe takes the place of the chart's
own. The chart Helm and the local backend read is then a copy of the chart with that
``local.yaml``, built in the catalog's cache (``<cache>/<catalog>/overlaid/``; the catalog's
own directory is never written to), like a chart whose dependencies had to be added.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from datalab.catalog.chart import directory_digest
from datalab.catalog.config import CatalogConfig

#: overlays shipped with datalab, by name (``local_recipes: onyxia``)
SHIPPED_OVERLAYS_DIR = Path(__file__).resolve().parents[3] / "catalog" / "overlays"
RECIPE = "local.yaml"


def overlay_dir(config: CatalogConfig) -> Path | None:
    """The directory of the catalog's overlay; None when it has none."""
    if not config.local_recipes:
        return None
    name = config.local_recipes
    if "/" not in name and not name.startswith((".", "~")):
        return SHIPPED_OVERLAYS_DIR / name
    return Path(name).expanduser()


def overlay_recipe(config: CatalogConfig, chart_name: str) -> Path | None:
    """The overlay's ``local.yaml`` for ``chart_name``, if it has one."""
    directory = overlay_dir(config)
    if directory is None or "/" in chart_name or chart_name.startswith("."):
        return None
    recipe = directory / chart_name / RECIPE
    return recipe if recipe.is_file() else None


def with_overlay(config: CatalogConfig, chart_name: str, path: Path, cache_dir: Path) -> Path:
    """``path`` itself, or, when the overlay has a recipe for the chart, a copy of the chart
    with that recipe as its ``local.yaml`` (reused while neither changes)."""
    recipe = overlay_recipe(config, chart_name)
    if recipe is None:
        return path
    text = recipe.read_bytes()
    key = hashlib.sha256(directory_digest(path).encode() + b"\0" + text).hexdigest()[:16]
    target = cache_dir / config.id / "overlaid" / f"{chart_name}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    shutil.copytree(path, building, symlinks=True)
    (building / RECIPE).write_bytes(text)
    try:
        os.rename(building, target)
    except OSError:  # built at the same time by another refresh: keep theirs
        shutil.rmtree(building, ignore_errors=True)
        if not target.is_dir():
            raise
    return target
