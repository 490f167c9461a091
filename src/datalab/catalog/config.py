"""How a catalog is declared: :class:`CatalogConfig`, and the ``catalog.yaml`` file format."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datalab.errors import CatalogError

CatalogType = Literal["directory", "helm"]


class CatalogConfig(BaseModel):
    """One catalog: a directory of charts or a Helm repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Short id used in URLs and commands (RFC 1123 label), e.g. 'datalab'.",
    )
    name: str | dict[str, str] = Field(
        "",
        description="Display name (default: the id); or, as Onyxia's catalogs, one per "
        'language: {"en": "Interactive services", "fr": "Services interactifs"}.',
    )
    description: str | dict[str, str] = Field(
        "",
        description="One or two sentences shown above the charts; a string or one per language.",
    )
    location: str = Field(
        description="A directory of charts (path or file:// URL), or a Helm repository URL "
        "(https://, or file:// to a directory holding index.yaml)."
    )
    type: CatalogType | None = Field(
        None,
        description="'directory' or 'helm'; default: 'helm' when the location holds an "
        "index.yaml or is an http(s) URL, else 'directory'.",
    )
    highlighted: list[str] = Field(
        default_factory=list, description="Charts shown first, in this order."
    )
    include: list[str] = Field(
        default_factory=list,
        description="Glob patterns on chart names; when set, only matching charts are listed.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns on chart names to hide."
    )
    repositories: dict[str, str] = Field(
        default_factory=dict,
        description="Where charts' dependencies come from when neither the chart (charts/) "
        "nor this catalog holds them: repository URLs as charts name them -> the Helm "
        "repository to read instead (https://, or a path or file:// URL of a directory holding "
        "index.yaml or vendored NAME-VERSION.tgz archives), e.g. a mirror on a closed network. "
        "Unmapped http(s) repositories are read as named.",
    )
    fetch_icons: bool = Field(
        False,
        description="Download charts' http(s) icons at load time into the cache directory, so "
        "that the platform serves them (browsers never fetch them from outside). Off: charts "
        "without an icon file of their own show their initials.",
    )
    local_recipes: str | None = Field(
        None,
        description="Local recipes for this catalog's charts, to run them on the local backend: "
        "a directory holding <chart name>/local.yaml (relative to the catalog file), or the name "
        "of an overlay shipped with datalab (onyxia: InseeFrLab's interactive services). An "
        "overlay's recipe takes the place of the chart's own local.yaml.",
    )
    refresh_interval_s: float | None = Field(
        None, gt=0, description="Reload the catalog in the background every N seconds."
    )

    @field_validator("location")
    @classmethod
    def _location_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("location must be a directory path or a URL")
        scheme = urlparse(value).scheme
        if scheme not in ("", "file", "http", "https") and len(scheme) > 1:  # c:\ on Windows
            raise ValueError(f"unsupported URL scheme {scheme!r}: use a path, file://, https://")
        return value

    @property
    def display_name(self) -> str:
        return localized(self.name) or self.id

    def name_in(self, lang: str) -> str:
        return localized(self.name, lang) or self.id

    def description_in(self, lang: str) -> str:
        return localized(self.description, lang)

    def is_remote(self) -> bool:
        return urlparse(self.location).scheme in ("http", "https")

    def local_path(self) -> Path:
        """The location as a local path (only for non-remote locations)."""
        parsed = urlparse(self.location)
        return Path(parsed.path) if parsed.scheme == "file" else Path(self.location).expanduser()

    def resolved_type(self) -> CatalogType:
        if self.type is not None:
            return self.type
        path = self.local_path()
        if self.is_remote() or (path.name == "index.yaml" and path.is_file()):
            return "helm"
        if (path / "index.yaml").is_file():
            return "helm"
        return "directory"

    def accepts(self, chart_name: str) -> bool:
        """Whether the include/exclude filters let this chart through."""
        if self.include and not any(fnmatch.fnmatchcase(chart_name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(chart_name, p) for p in self.exclude)


def localized(text: str | dict[str, str], lang: str = "en") -> str:
    """Onyxia's ``LocalizedString``: a string, or one per language code, read in ``lang``, else
    in English, else in the first language given."""
    if isinstance(text, str):
        return text
    return text.get(lang) or text.get("en") or next(iter(text.values()), "")


def load_catalog_file(path: Path) -> list[CatalogConfig]:
    """Read a ``catalog.yaml`` (``catalogs: [CatalogConfig...]``).

    Relative ``location`` values are relative to the file's directory.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("catalogs"), list):
        raise CatalogError(f"{path}: expected a mapping with a 'catalogs' list")
    configs = []
    for index, entry in enumerate(data["catalogs"]):
        if isinstance(entry, dict) and isinstance(entry.get("location"), str):
            location = entry["location"]
            if not urlparse(location).scheme and not Path(location).is_absolute():
                entry = {**entry, "location": str((path.parent / location).resolve())}
            recipes = entry.get("local_recipes")
            if isinstance(recipes, str) and recipes.startswith("./"):
                entry = {**entry, "local_recipes": str((path.parent / recipes).resolve())}
        try:
            configs.append(CatalogConfig.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(entry)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise CatalogError(f"{path}: catalogs[{index}]: {problems}") from exc
    return configs
