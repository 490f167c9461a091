"""The chart model and the loader that turns an unpacked chart directory into a :class:`Chart`.

A chart that cannot be loaded is not an exception for its catalog: the loader raises
:class:`ChartInvalid` with a reason, and the catalog lists it as a :class:`BrokenChart`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from datalab.catalog.helm_check import check_templates as helm_check_templates
from datalab.catalog.icons import local_icon
from datalab.catalog.recipe import validate_local_recipe
from datalab.catalog.schema import validator_class_for
from datalab.errors import ChartInvalid

if TYPE_CHECKING:
    from datalab.catalog.schema import SchemaRegistry

CHART_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")


@dataclass(frozen=True)
class Chart:
    """One version of a chart, unpacked on disk and parsed."""

    catalog_id: str
    name: str
    version: str
    path: Path  # the unpacked chart directory (Chart.yaml, values.yaml, templates/, local.yaml)
    digest: str  # sha256 of the chart's files: identifies this exact content (cache key)
    metadata: dict[str, Any]  # Chart.yaml
    values: dict[str, Any]  # values.yaml
    schema: dict[str, Any] | None  # values.schema.json, raw (x-onyxia keys unresolved)
    readme: str = ""
    notes: str = ""  # templates/NOTES.txt, unrendered
    local_recipe: dict[str, Any] | None = None  # local.yaml, shape-validated, unrendered
    versions: tuple[str, ...] = ()  # every version the catalog offers, newest first
    # the chart's directory in its catalog, when ``path`` is a copy completed with its
    # dependencies (catalog.dependencies); None: ``path`` is that directory
    source: Path | None = None
    schemas: SchemaRegistry | None = field(default=None, compare=False, repr=False)
    # the icon file the platform serves (catalog.icons): the chart's own, or a downloaded copy
    # of its remote ``icon:``; None: the page shows the chart's initials
    icon_path: Path | None = field(default=None, compare=False)

    @property
    def description(self) -> str:
        return str(self.metadata.get("description") or "")

    @property
    def descriptions(self) -> dict[str, str]:
        """The description in other languages, from ``Chart.yaml`` annotations
        ``datalab/description.<lang>`` (``datalab/description.fr: Le JupyterLab...``)."""
        annotations = self.metadata.get("annotations")
        if not isinstance(annotations, dict):
            return {}
        prefix = "datalab/description."
        return {
            str(key)[len(prefix) :]: str(text)
            for key, text in annotations.items()
            if str(key).startswith(prefix) and len(str(key)) > len(prefix) and text
        }

    def description_in(self, lang: str) -> str:
        """The description in ``lang`` when the chart translates it, else its own."""
        return self.descriptions.get(lang) or self.description

    @property
    def icon(self) -> str | None:
        icon = self.metadata.get("icon")
        return str(icon) if icon else None

    @property
    def keywords(self) -> list[str]:
        return [str(k) for k in self.metadata.get("keywords") or []]

    @property
    def home(self) -> str | None:
        home = self.metadata.get("home")
        return str(home) if home else None

    @property
    def sources(self) -> list[str]:
        return [str(s) for s in self.metadata.get("sources") or []]

    @property
    def app_version(self) -> str | None:
        app_version = self.metadata.get("appVersion")
        return str(app_version) if app_version is not None else None

    @property
    def runs_locally(self) -> bool:
        return self.local_recipe is not None

    @property
    def has_icon(self) -> bool:
        return self.icon_path is not None

    def summary(self) -> dict[str, Any]:
        """JSON for catalog listings (:class:`ChartSummary`)."""
        return ChartSummary.model_validate(self).model_dump(mode="json")


@dataclass(frozen=True)
class BrokenChart:
    """A chart that could not be loaded, with the reason (shown in listings and errors)."""

    name: str
    reason: str
    version: str | None = None
    path: Path | None = None


class ChartSummary(BaseModel):
    """A chart in catalog listings."""

    model_config = ConfigDict(from_attributes=True)  # ChartSummary.model_validate(chart)

    catalog_id: str
    name: str
    version: str
    versions: list[str] = Field(
        description="Every version the catalog offers, newest first (at least this one)."
    )
    description: str = Field(description="Chart.yaml's description.")
    descriptions: dict[str, str] = Field(
        description="The description in other languages, by language code "
        "(Chart.yaml annotations datalab/description.<lang>)."
    )
    icon: str | None = Field(description="Chart.yaml's icon (a URL), if any.")
    has_icon: bool = Field(
        description="The platform serves its icon (/ui/chart-icons/...); else pages show its "
        "initials."
    )
    keywords: list[str]
    home: str | None
    sources: list[str]
    app_version: str | None = Field(description="Chart.yaml's appVersion.")
    runs_locally: bool = Field(description="It has a local recipe: the local backend runs it.")

    @model_validator(mode="after")
    def _own_version_listed(self) -> ChartSummary:
        if not self.versions:  # a chart loaded alone: its own version is all there is
            self.versions = [self.version]
        return self


class ChartPage(ChartSummary):
    """A chart's page: its summary plus its documents."""

    readme: str = Field(description="README.md, Markdown.")
    notes: str = Field(description="templates/NOTES.txt, unrendered.")
    values: dict[str, Any] = Field(description="values.yaml, as JSON.")
    values_schema: dict[str, Any] | None = Field(
        alias="schema",
        description="values.schema.json, raw (x-onyxia keys unresolved); null when it has none.",
    )
    local_recipe: dict[str, Any] | None = Field(
        description="local.yaml, unrendered; null when the local backend cannot run it."
    )
    digest: str = Field(description="sha256 of the chart's files.")


class BrokenChartOut(BaseModel):
    """A chart of a catalog that could not be loaded."""

    model_config = ConfigDict(from_attributes=True)  # BrokenChartOut.model_validate(broken)

    name: str
    version: str | None = Field(description="The version that failed, when known.")
    reason: str


def looks_like_chart(directory: Path) -> bool:
    """Whether a directory is meant to be a chart (so that a broken one gets reported)."""
    return any(
        (directory / name).exists()
        for name in ("Chart.yaml", "values.yaml", "values.schema.json", "templates")
    )


def load_chart_dir(
    path: Path, catalog_id: str, *, check_templates: bool = True, digest: str | None = None
) -> Chart:
    """Load and check one unpacked chart. Raises :class:`ChartInvalid` naming the problem.
    ``digest``: the directory's :func:`directory_digest`, when the caller has it already."""
    label = path.name
    chart_yaml = path / "Chart.yaml"
    if not chart_yaml.is_file():
        raise ChartInvalid(f"chart {label!r}: missing Chart.yaml in {path}")
    metadata = _read_yaml_mapping(chart_yaml, label)
    name, version = metadata.get("name"), metadata.get("version")
    if not isinstance(name, str) or not CHART_NAME.match(name):
        raise ChartInvalid(
            f"chart {label!r}: Chart.yaml 'name' must be a lowercase chart name, got {name!r}"
        )
    if not isinstance(version, str | int | float) or not str(version).strip():
        raise ChartInvalid(f"chart {name!r}: Chart.yaml has no 'version'")
    version = str(version)

    values_path = path / "values.yaml"
    values = _read_yaml_mapping(values_path, name) if values_path.is_file() else {}
    schema = _read_schema(path / "values.schema.json", name)
    recipe = load_local_recipe(path, name)

    digest = digest or directory_digest(path)
    if check_templates:
        helm_check_templates(path, name, digest)

    return Chart(
        catalog_id=catalog_id,
        name=name,
        version=version,
        path=path,
        digest=digest,
        metadata=metadata,
        values=values,
        schema=schema,
        readme=_read_text(path / "README.md"),
        notes=_read_text(path / "templates" / "NOTES.txt"),
        local_recipe=recipe,
        versions=(version,),
        icon_path=local_icon(path, str(metadata["icon"]) if metadata.get("icon") else None),
    )


def load_local_recipe(chart_dir: Path, chart: str) -> dict[str, Any] | None:
    """The chart's local recipe (``local.yaml``), shape-validated; None when it has none (it
    cannot run on the local backend)."""
    path = chart_dir / "local.yaml"
    if not path.is_file():
        return None
    return validate_local_recipe(_read_yaml_mapping(path, chart), chart)


def _read_yaml_mapping(path: Path, chart: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ChartInvalid(f"chart {chart!r}: {path.name} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ChartInvalid(f"chart {chart!r}: cannot read {path.name}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChartInvalid(
            f"chart {chart!r}: {path.name} must be a mapping, got {type(data).__name__}"
        )
    return data


def _read_schema(path: Path, chart: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ChartInvalid(f"chart {chart!r}: values.schema.json is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ChartInvalid(f"chart {chart!r}: cannot read values.schema.json: {exc}") from exc
    if not isinstance(schema, dict):
        raise ChartInvalid(f"chart {chart!r}: values.schema.json must be a JSON object")
    try:
        validator_class_for(schema).check_schema(schema)
    except Exception as exc:  # jsonschema.SchemaError and unknown $schema
        message = getattr(exc, "message", str(exc))
        where = "/".join(str(p) for p in getattr(exc, "path", ()))
        raise ChartInvalid(
            f"chart {chart!r}: values.schema.json is not a valid JSON schema"
            f"{f' at {where}' if where else ''}: {message}"
        ) from exc
    return schema


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def directory_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
