"""Hierarchical classifications: levels, codes, labels, parents; loaders; correspondence tables.

`Nomenclature` is generic: a list of level names (broadest first) and a tree of codes. Codes are
matched on a *compact key* (upper case, only letters and digits) so that every written form of a
code (`01.11Z`, `0111Z`, ` 01.11z `) normalises to the canonical one. Everything NAF-specific
lives in the loaders at the bottom of this module.
"""

from __future__ import annotations

import io
import json
import re
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from autocode.errors import UserError

NAF_LEVELS = ("section", "division", "group", "class", "subclass")

#: Code patterns of the NAF / NACE levels (dotted canonical form), used by the list loaders.
NAF_CODE_PATTERNS = {
    "section": r"[A-Z]",
    "division": r"\d{2}",
    "group": r"\d{2}\.\d",
    "class": r"\d{2}\.\d{2}",
    "subclass": r"\d{2}\.\d{2}[A-Z]",
}

_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


class NomenclatureError(UserError, ValueError):
    """A nomenclature file or code that cannot be used; the message says what to fix."""


def compact_code(code: str) -> str:
    """The format-independent key of a code: upper case, letters and digits only."""
    return _NOT_ALNUM.sub("", str(code).upper())


@dataclass(frozen=True)
class Node:
    code: str
    level: str
    label: str
    parent: str | None


@dataclass
class Nomenclature:
    """A tree of codes with one level per depth.

    ``levels`` are the level names from the broadest (root side) to the finest (leaves).
    """

    name: str
    version: str
    levels: tuple[str, ...]
    nodes: dict[str, Node] = field(default_factory=dict)
    _by_key: dict[str, str] = field(default_factory=dict, repr=False)
    _children: dict[str | None, list[str]] = field(default_factory=dict, repr=False)

    # -- building ---------------------------------------------------------------------------
    def add(self, code: str, level: str, label: str = "", parent: str | None = None) -> Node:
        if level not in self.levels:
            raise NomenclatureError(f"unknown level {level!r} for {code!r}; levels: {self.levels}")
        code = str(code).strip()
        key = compact_code(code)
        if not key:
            raise NomenclatureError(f"empty code at level {level!r}")
        if key in self._by_key:
            existing = self.nodes[self._by_key[key]]
            if existing.level != level or (parent and existing.parent != parent):
                raise NomenclatureError(f"code {code!r} defined twice with different places")
            if label and not existing.label:
                self.nodes[existing.code] = Node(existing.code, level, label, existing.parent)
            return self.nodes[existing.code]
        if parent is not None:
            parent = self.normalize(parent)
            expected = self.levels.index(level) - 1
            if self.levels.index(self.nodes[parent].level) != expected:
                raise NomenclatureError(
                    f"parent {parent!r} of {code!r} is not at level {self.levels[expected]!r}"
                )
        elif self.levels.index(level) != 0:
            raise NomenclatureError(f"code {code!r} at level {level!r} needs a parent")
        node = Node(code, level, label, parent)
        self.nodes[code] = node
        self._by_key[key] = code
        self._children.setdefault(parent, []).append(code)
        return node

    # -- codes ------------------------------------------------------------------------------
    def normalize(self, code: str) -> str:
        """The canonical form of ``code``; raises `NomenclatureError` if it is not a code."""
        found = self.find(code)
        if found is None:
            raise NomenclatureError(f"{code!r} is not a code of {self.name} {self.version}")
        return found

    def find(self, code: object) -> str | None:
        """The canonical form of ``code``, or None if it is not a code of this nomenclature."""
        if code is None or (isinstance(code, float) and code != code):
            return None
        return self._by_key.get(compact_code(str(code)))

    def __contains__(self, code: object) -> bool:
        return self.find(code) is not None

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    @property
    def leaf_level(self) -> str:
        return self.levels[-1]

    def codes(self, level: str | None = None) -> list[str]:
        """Codes of one level (the finest by default), in nomenclature order."""
        level = level or self.leaf_level
        if level not in self.levels:
            raise NomenclatureError(f"unknown level {level!r}; levels: {self.levels}")
        return [n.code for n in self.nodes.values() if n.level == level]

    def node(self, code: str) -> Node:
        return self.nodes[self.normalize(code)]

    def label(self, code: str) -> str:
        return self.node(code).label

    def level_of(self, code: str) -> str:
        return self.node(code).level

    def parent(self, code: str) -> str | None:
        return self.node(code).parent

    def children(self, code: str | None) -> list[str]:
        return list(self._children.get(None if code is None else self.normalize(code), []))

    def ancestors(self, code: str) -> list[str]:
        """Parent, grand-parent, ... up to the root level (the code itself excluded)."""
        out: list[str] = []
        parent = self.parent(code)
        while parent is not None:
            out.append(parent)
            parent = self.nodes[parent].parent
        return out

    def ancestor_at(self, code: str, level: str) -> str:
        """The code itself or its ancestor at ``level`` (not finer than the code's level)."""
        code = self.normalize(code)
        for candidate in [code, *self.ancestors(code)]:
            if self.nodes[candidate].level == level:
                return candidate
        raise NomenclatureError(f"{code!r} has no ancestor at level {level!r}")

    def path(self, code: str) -> dict[str, str]:
        """``{level: code}`` from the root level down to ``code``'s level."""
        code = self.normalize(code)
        return {self.nodes[c].level: c for c in [code, *self.ancestors(code)]}

    def leaves_under(self, code: str) -> list[str]:
        """The finest-level codes below (or equal to) ``code``."""
        code = self.normalize(code)
        if self.nodes[code].level == self.leaf_level:
            return [code]
        return [leaf for child in self.children(code) for leaf in self.leaves_under(child)]

    def validate(self) -> list[str]:
        """Problems of the tree (leaf-less branches, missing labels); empty when it is sound."""
        problems = []
        for node in self.nodes.values():
            if node.level != self.leaf_level and not self._children.get(node.code):
                problems.append(f"{node.code} ({node.level}) has no children")
        counts = {level: len(self.codes(level)) for level in self.levels}
        problems += [f"level {lvl!r} has no codes" for lvl, n in counts.items() if n == 0]
        return problems

    # -- serialisation (the model carries its nomenclature) ---------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "levels": list(self.levels),
            "nodes": [[n.code, n.level, n.label, n.parent] for n in self.nodes.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Nomenclature:
        nomenclature = cls(data["name"], data["version"], tuple(data["levels"]))
        for code, level, label, parent in data["nodes"]:
            nomenclature.add(code, level, label, parent)
        return nomenclature

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Nomenclature:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# -- explanatory notes ----------------------------------------------------------------------------
NOTE_FIELDS = ("general_note", "comprend", "comprend_aussi", "ne_comprend_pas")


@dataclass(frozen=True)
class Note:
    code: str
    label: str
    general_note: str = ""
    comprend: str = ""
    comprend_aussi: str = ""
    ne_comprend_pas: str = ""


def _clean(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


# -- generic loaders ------------------------------------------------------------------------------
def read_bytes(source: str | Path) -> bytes:
    """The content of a local path or an http(s):// URL."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        with urllib.request.urlopen(text, timeout=60) as response:  # noqa: S310 (scheme checked)
            return response.read()
    path = Path(text)
    if not path.exists():
        raise NomenclatureError(f"nomenclature file not found: {path}")
    return path.read_bytes()


def _read_csv(source: str | Path) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(read_bytes(source)), dtype=str, keep_default_na=False)


def from_wide_table(
    table: pd.DataFrame, name: str, version: str, levels: Iterable[str]
) -> Nomenclature:
    """A nomenclature from one row per leaf with ``code_<level>`` / ``label_<level>`` columns."""
    levels = tuple(levels)
    missing = [f"code_{lvl}" for lvl in levels if f"code_{lvl}" not in table.columns]
    if missing:
        raise NomenclatureError(f"columns {missing} missing; found {list(table.columns)}")
    nomenclature = Nomenclature(name, version, levels)
    for row in table.itertuples(index=False):
        record = row._asdict()
        parent = None
        for level in levels:
            code = _clean(record[f"code_{level}"]).strip()
            if not code:
                raise NomenclatureError(f"empty code_{level} in row {record}")
            label = _clean(record.get(f"label_{level}", "")).strip()
            nomenclature.add(code, level, label, parent)
            parent = code
    return nomenclature


def from_code_list(
    rows: Iterable[tuple[str, str]],
    name: str,
    version: str,
    patterns: Mapping[str, str],
) -> Nomenclature:
    """A nomenclature from an ordered list of ``(code, label)`` with one regex per level.

    Each code's level is the first pattern it fully matches; its parent is the latest code
    seen at the level above (the order of the official lists: each heading precedes its
    content).
    """
    levels = tuple(patterns)
    compiled = [(level, re.compile(pattern)) for level, pattern in patterns.items()]
    nomenclature = Nomenclature(name, version, levels)
    latest: dict[str, str] = {}
    for code, label in rows:
        level = next((lvl for lvl, rx in compiled if rx.fullmatch(code)), None)
        if level is None:
            raise NomenclatureError(f"code {code!r} matches no level pattern of {name}")
        depth = levels.index(level)
        parent = latest.get(levels[depth - 1]) if depth else None
        if depth and parent is None:
            raise NomenclatureError(f"code {code!r} comes before any {levels[depth - 1]!r}")
        nomenclature.add(code, level, label, parent)
        latest[level] = code
        for finer in levels[depth + 1 :]:
            latest.pop(finer, None)
    return nomenclature


# -- NAF / NACE loaders ---------------------------------------------------------------------------
def nomenclature_folder(folder: str | Path | None = None) -> Path:
    """The folder of the shared nomenclature files: ``folder``, ``$AUTOCODE_NOMENCLATURES``, or
    ``<repository>/../shared/data/nomenclatures``."""
    import os

    if folder is None:
        folder = os.environ.get("AUTOCODE_NOMENCLATURES") or (
            Path(__file__).resolve().parents[3] / "shared" / "data" / "nomenclatures"
        )
    path = Path(folder)
    if not path.is_dir():
        raise NomenclatureError(
            f"nomenclature folder {path} not found: pass --nomenclatures or set "
            "AUTOCODE_NOMENCLATURES"
        )
    return path


def load_naf2008(source: str | Path | None = None) -> Nomenclature:
    """NAF rév. 2 from its 5-level CSV (a file path/URL, or the folder holding it)."""
    return _load_hierarchy(source, "naf2008_hierarchy.csv", "NAF", "rev2-2008")


def load_naf2025(source: str | Path | None = None) -> Nomenclature:
    """NAF 2025 from its 5-level CSV. Class and group labels are absent from the source; a
    class with one subclass takes that subclass's label."""
    naf = _load_hierarchy(source, "naf2025_hierarchy.csv", "NAF", "2025")
    for code in naf.codes("class"):
        node, children = naf.nodes[code], naf.children(code)
        if not node.label and len(children) == 1:
            naf.nodes[code] = Node(code, node.level, naf.label(children[0]), node.parent)
    return naf


def _load_hierarchy(source: str | Path | None, filename: str, name: str, version: str):
    if source is None or Path(str(source)).is_dir():
        source = nomenclature_folder(source) / filename
    return from_wide_table(_read_csv(source), name, version, NAF_LEVELS)


def load_nace_rev2(source: str | Path | None = None) -> Nomenclature:
    """NACE Rev. 2 (English, Eurostat) down to classes from the explanatory-notes CSV."""
    table = _read_notes_table(source, "nace_rev2_explanatory_notes_en.csv")
    nomenclature = Nomenclature("NACE", "rev2", NAF_LEVELS[:4])
    for row in table.sort_values("level", kind="stable").itertuples(index=False):
        level = NAF_LEVELS[int(row.level) - 1]
        nomenclature.add(row.code, level, row.description, row.parent or None)
    return nomenclature


def load_notes_fr(source: str | Path | None = None) -> dict[str, Note]:
    """Insee's NAF rév. 2 explanatory notes, by canonical code."""
    table = _read_notes_table(source, "naf2008_explanatory_notes_fr.csv")
    return {
        row["code"]: Note(row["code"], row["label"], *(row[f] for f in NOTE_FIELDS))
        for row in table.to_dict("records")
    }


def load_notes_nace_en(source: str | Path | None = None) -> dict[str, Note]:
    """Eurostat's NACE Rev. 2 notes mapped onto the same fields (includes → comprend, ...)."""
    table = _read_notes_table(source, "nace_rev2_explanatory_notes_en.csv")
    return {
        row["code"]: Note(
            row["code"],
            row["description"],
            "",
            row["includes"],
            row["also_includes"],
            row["excludes"],
        )
        for row in table.to_dict("records")
    }


def _read_notes_table(source: str | Path | None, filename: str) -> pd.DataFrame:
    if source is None or Path(str(source)).is_dir():
        source = nomenclature_folder(source) / filename
    return _read_csv(source)


def load_insee_spreadsheet(
    source: str | Path,
    name: str = "NAF",
    version: str = "rev2-2008",
    patterns: Mapping[str, str] = NAF_CODE_PATTERNS,
) -> Nomenclature:
    """A nomenclature from Insee's official list spreadsheet (``.xlsx``).

    Layout (e.g. ``int_courts_naf_rev_2``): a few title lines, then a header row with a
    ``Code`` column and a label column (``Intitulé...``), then one row per code in tree order,
    sections written ``SECTION A``. Blank rows are skipped.
    """
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(read_bytes(source)), read_only=True)
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    workbook.close()
    header_index, code_col, label_col = _find_header(rows, source)
    entries = []
    for row in rows[header_index + 1 :]:
        code = _clean(row[code_col]).strip() if code_col < len(row) else ""
        if not code:
            continue
        code = re.sub(r"^SECTION\s+", "", code, flags=re.IGNORECASE)
        label = _clean(row[label_col]).strip() if label_col < len(row) else ""
        entries.append((code, label))
    return from_code_list(entries, name, version, patterns)


def _find_header(rows: list[tuple], source: object) -> tuple[int, int, int]:
    for index, row in enumerate(rows):
        cells = [_clean(c).strip().lower() for c in row]
        if "code" in cells:
            code_col = cells.index("code")
            label_col = next(
                (i for i, c in enumerate(cells) if c.startswith(("intitulé", "libellé"))), None
            )
            if label_col is not None:
                return index, code_col, label_col
    raise NomenclatureError(
        f"{source}: no header row with a 'Code' column and an 'Intitulé'/'Libellé' column"
    )


# -- correspondence tables ------------------------------------------------------------------------
@dataclass
class Correspondence:
    """Links between the codes of two nomenclatures (e.g. NAF rév. 2 → NAF 2025)."""

    source: Nomenclature
    target: Nomenclature
    links: dict[str, list[str]]

    def targets(self, code: str) -> list[str]:
        return list(self.links.get(self.source.normalize(code), []))

    def is_one_to_one(self, code: str) -> bool:
        return len(self.targets(code)) == 1

    def map_unique(self, code: str) -> str | None:
        """The single target of ``code``, or None when it has zero or several targets."""
        targets = self.targets(code)
        return targets[0] if len(targets) == 1 else None

    def kinds(self) -> dict[str, str]:
        """For each source code: ``1:1``, ``1:n``, ``n:1`` or ``n:n`` (one-to-many, ...)."""
        sources_of: dict[str, set[str]] = {}
        for code, targets in self.links.items():
            for target in targets:
                sources_of.setdefault(target, set()).add(code)
        out = {}
        for code, targets in self.links.items():
            many_sources = any(len(sources_of[t]) > 1 for t in targets)
            out[code] = ("n" if many_sources else "1") + ":" + ("n" if len(targets) > 1 else "1")
        return out


def load_correspondence(
    source: str | Path,
    from_nomenclature: Nomenclature,
    to_nomenclature: Nomenclature,
    source_column: str,
    target_column: str,
) -> Correspondence:
    """A correspondence table from a CSV or XLSX file with one row per (source, target) link.

    Codes in any format are normalised; unknown codes raise an error naming them.
    """
    text = str(source)
    data = read_bytes(source)
    if text.endswith((".xlsx", ".xlsm")):
        table = pd.read_excel(io.BytesIO(data), dtype=str).fillna("")
    else:
        table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    for column in (source_column, target_column):
        if column not in table.columns:
            raise NomenclatureError(f"{source}: column {column!r} missing; {list(table.columns)}")
    links: dict[str, list[str]] = {}
    unknown = []
    for src, dst in zip(table[source_column], table[target_column], strict=True):
        if not src.strip() or not dst.strip():
            continue
        a, b = from_nomenclature.find(src), to_nomenclature.find(dst)
        if a is None or b is None:
            unknown.append(src if a is None else dst)
            continue
        if b not in links.setdefault(a, []):
            links[a].append(b)
    if unknown:
        raise NomenclatureError(f"{source}: unknown codes {sorted(set(unknown))[:10]}")
    return Correspondence(from_nomenclature, to_nomenclature, links)
