from pathlib import Path

import openpyxl
import pytest

from autocode.nomenclature import (
    Nomenclature,
    NomenclatureError,
    compact_code,
    load_correspondence,
    load_insee_spreadsheet,
    load_nace_rev2,
    load_naf2008,
    load_naf2025,
    load_notes_fr,
    load_notes_nace_en,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_naf2008_levels_and_counts(naf2008):
    counts = {level: len(naf2008.codes(level)) for level in naf2008.levels}
    assert counts == {"section": 21, "division": 88, "group": 272, "class": 615, "subclass": 732}
    assert naf2008.validate() == []
    assert naf2008.leaf_level == "subclass"


def test_code_normalisation_and_tree(naf2008):
    for written in ("01.11Z", "0111Z", " 01.11z ", "01-11Z"):
        assert naf2008.normalize(written) == "01.11Z"
    assert naf2008.find("9999Z") is None
    assert "6622Z" in naf2008 and "66.22Z" in naf2008
    assert naf2008.ancestors("0111Z") == ["01.11", "01.1", "01", "A"]
    assert naf2008.parent("01.1") == "01"
    assert naf2008.level_of("A") == "section"
    assert naf2008.ancestor_at("10.71C", "division") == "10"
    assert naf2008.path("10.71C")["group"] == "10.7"
    assert naf2008.label("10.71C") == "Boulangerie et boulangerie-pâtisserie"
    assert set(naf2008.leaves_under("10.71")) == {"10.71A", "10.71B", "10.71C", "10.71D"}
    assert "10.71" in naf2008.children("10.7")
    with pytest.raises(NomenclatureError, match="not a code"):
        naf2008.normalize("ZZ")
    assert compact_code("01.11z") == "0111Z"


def test_serialisation_round_trip(naf2008, tmp_path):
    naf2008.save(tmp_path / "n.json")
    again = Nomenclature.load(tmp_path / "n.json")
    assert again.to_dict() == naf2008.to_dict()


def test_generic_nomenclature_rejects_bad_trees():
    tree = Nomenclature("toy", "1", ("top", "leaf"))
    tree.add("X", "top", "Top")
    tree.add("X1", "leaf", "Leaf", parent="X")
    with pytest.raises(NomenclatureError, match="needs a parent"):
        tree.add("Y1", "leaf", "orphan")
    with pytest.raises(NomenclatureError, match="unknown level"):
        tree.add("Z", "middle")
    tree.add("Y", "top", "empty branch")
    assert tree.validate() == ["Y (top) has no children"]


def test_naf2025_and_nace(nomenclatures_dir):
    naf2025 = load_naf2025(nomenclatures_dir)
    assert len(naf2025.codes("subclass")) == 747
    assert naf2025.normalize("0111Y") == "01.11Y"
    # class labels come from the single subclass of undivided classes
    assert naf2025.label("01.11") == naf2025.label("01.11Y")
    nace = load_nace_rev2(nomenclatures_dir)
    assert nace.levels == ("section", "division", "group", "class")
    assert len(nace.codes("class")) == 615
    assert nace.label("A") == "AGRICULTURE, FORESTRY AND FISHING"
    assert load_notes_nace_en(nomenclatures_dir)["01"].comprend.startswith("This division")


def test_notes(notes_fr):
    assert len(notes_fr) == 1728
    note = notes_fr["13.20Z"]
    assert note.label == "Tissage"
    assert "(cf. 13.91Z)" in note.ne_comprend_pas


def test_loaders_accept_a_file_path_and_a_url(nomenclatures_dir):
    path = nomenclatures_dir / "naf2008_hierarchy.csv"
    assert len(load_naf2008(path)) == 1728
    assert len(load_naf2008(path.as_uri().replace("file://", ""))) == 1728
    assert len(load_notes_fr(nomenclatures_dir / "naf2008_explanatory_notes_fr.csv")) == 1728


def write_insee_spreadsheet(path: Path) -> None:
    """A small workbook in the layout of Insee's `int_courts_naf_rev_2` lists."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Nomenclature d'activités française - NAF rév. 2"])
    sheet.append([])
    sheet.append(["Ligne", "Code", "Intitulés de la  NAF rév. 2, version finale", "65 car."])
    rows = [
        ("SECTION A", "Agriculture, sylviculture et pêche"),
        ("01", "Culture et production animale, chasse et services annexes"),
        ("01.1", "Cultures non permanentes"),
        ("01.11", "Culture de céréales"),
        ("01.11Z", "Culture de céréales (à l'exception du riz)"),
        ("01.12", "Culture du riz"),
        ("01.12Z", "Culture du riz"),
        (None, None),
        ("SECTION C", "Industrie manufacturière"),
        ("10", "Industries alimentaires"),
        ("10.7", "Fabrication de produits de boulangerie-pâtisserie et de pâtes"),
        ("10.71", "Fabrication de pain et de pâtisserie fraîche"),
        ("10.71C", "Boulangerie et boulangerie-pâtisserie"),
        ("10.71D", "Pâtisserie"),
    ]
    for i, (code, label) in enumerate(rows, start=1):
        sheet.append([i, code, label, (label or "")[:65]])
    workbook.save(path)


def test_insee_spreadsheet_layout(tmp_path):
    path = tmp_path / "int_courts_naf_rev_2.xlsx"
    write_insee_spreadsheet(path)
    naf = load_insee_spreadsheet(path)
    assert naf.codes("section") == ["A", "C"]
    assert naf.ancestors("1071D") == ["10.71", "10.7", "10", "C"]
    assert naf.label("01.12Z") == "Culture du riz"
    assert naf.validate() == []


def test_insee_spreadsheet_without_header_is_refused(tmp_path):
    workbook = openpyxl.Workbook()
    workbook.active.append(["nothing", "here"])
    workbook.save(tmp_path / "bad.xlsx")
    with pytest.raises(NomenclatureError, match="header row"):
        load_insee_spreadsheet(tmp_path / "bad.xlsx")


def test_correspondence_one_to_one_and_one_to_many(naf2008, nomenclatures_dir):
    naf2025 = load_naf2025(nomenclatures_dir)
    table = load_correspondence(
        FIXTURES / "naf2008_to_naf2025_sample.csv", naf2008, naf2025, "naf2008", "naf2025"
    )
    assert table.map_unique("5610C") == "56.11J"  # undotted source code normalised
    assert table.is_one_to_one("62.01Z")
    assert table.targets("10.71C") == ["10.71H", "10.71J"]
    assert table.map_unique("10.71C") is None
    kinds = table.kinds()
    assert kinds["56.10A"] == "1:1"
    assert kinds["10.71C"] == "1:n"
    assert kinds["58.29A"] == "n:1"


def test_correspondence_reports_unknown_codes(naf2008, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n01.11Z,99.99X\n")
    with pytest.raises(NomenclatureError, match="unknown codes"):
        load_correspondence(bad, naf2008, naf2008, "a", "b")
