"""Catalogs of Onyxia-compatible Helm charts, and the resolution of their values schemas.

Public API::

    CatalogConfig, CatalogRegistry, Catalog, Chart, BrokenChart, SchemaRegistry, HelmSource
    CatalogError, ChartNotFound, ChartInvalid, SchemaError, ValuesError, ValueProblem
    SHIPPED_CATALOG_DIR, SHIPPED_SCHEMAS_DIR, load_catalog_file, load_chart_dir
"""

from __future__ import annotations

from pathlib import Path

from datalab.catalog.chart import BrokenChart, Chart, load_chart_dir
from datalab.catalog.config import CatalogConfig, load_catalog_file
from datalab.catalog.registry import CatalogRegistry
from datalab.catalog.schema import SHIPPED_SCHEMAS_DIR, SchemaRegistry
from datalab.catalog.sources import Catalog, HelmSource
from datalab.errors import (
    CatalogError,
    ChartInvalid,
    ChartNotFound,
    SchemaError,
    ValueProblem,
    ValuesError,
)

#: the catalog shipped in this repository (charts + ``catalog.yaml`` + ``schemas/``)
SHIPPED_CATALOG_DIR: Path = SHIPPED_SCHEMAS_DIR.parent

__all__ = [
    "SHIPPED_CATALOG_DIR",
    "SHIPPED_SCHEMAS_DIR",
    "BrokenChart",
    "Catalog",
    "CatalogConfig",
    "CatalogError",
    "CatalogRegistry",
    "Chart",
    "ChartInvalid",
    "ChartNotFound",
    "HelmSource",
    "SchemaError",
    "SchemaRegistry",
    "ValueProblem",
    "ValuesError",
    "load_catalog_file",
    "load_chart_dir",
]
