import functools
import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

from autocode import data as datamod
from autocode.nomenclature import load_naf2008

FIXTURES = Path(__file__).parent / "fixtures"


def test_labelled_data_reports_invalid_codes(naf2008):
    labelled = datamod.load_labelled(
        FIXTURES / "labelled_sample.csv", naf2008, categorical_columns=["type_", "nature"]
    )
    assert labelled.rows["code"].tolist() == ["10.71C", "56.10A", "56.10C", "10.52Z"]
    assert list(labelled.rows.columns) == ["text", "code", "type_", "nature", "source"]
    reasons = dict(zip(labelled.invalid["code"], labelled.invalid["reason"], strict=True))
    assert reasons == {
        "9999Z": "unknown code",
        "56.10": "not a subclass code",
        "5610A": "empty text",
    }
    assert "3 invalid" in labelled.report()


def test_missing_columns_are_named(naf2008):
    with pytest.raises(datamod.DataError, match=r"\['libelle'\] missing"):
        datamod.load_labelled(FIXTURES / "labelled_sample.csv", naf2008, text_column="libelle")


def test_parquet_round_trip(naf2008, tmp_path):
    table = datamod.read_table(FIXTURES / "labelled_sample.csv")
    datamod.write_table(table, tmp_path / "sample.parquet")
    labelled = datamod.load_labelled(tmp_path / "sample.parquet", naf2008)
    assert len(labelled.rows) == 4
    with pytest.raises(datamod.DataError, match="unknown format"):
        datamod.read_table(FIXTURES / "test_data.xls")


def test_split_phrases_and_exclusion_targets(naf2008):
    note = "- le tissage de soie : • la fabrication de velours • la fabrication de soieries"
    assert datamod.split_phrases(note) == [
        "le tissage de soie",
        "la fabrication de velours",
        "la fabrication de soieries",
    ]
    assert datamod.exclusion_targets("la fabrication de tapis (cf. 13.93Z)", naf2008) == ["13.93Z"]
    assert datamod.exclusion_targets("le commerce (cf. 46.2 à 46.9)", naf2008) == []
    assert datamod.exclusion_targets("cf. rien", naf2008) == []


def test_cold_start_covers_every_code(naf2008, notes_fr):
    table = datamod.build_cold_start(naf2008, notes_fr)
    report = datamod.rows_per_code(table, naf2008)
    assert len(report) == 732 and report["rows"].min() >= 2
    assert {"label_subclass", "comprend", "ne_comprend_pas", "ancestor_text"} <= set(
        table["source"]
    )
    # an exclusion item of 13.20Z ("la fabrication d'étoffes à mailles (cf. 13.91Z)")
    # becomes a phrase of 13.91Z, without its reference
    rows = table[(table["source"] == "ne_comprend_pas") & (table["code"] == "13.91Z")]
    assert "la fabrication d'étoffes à mailles" in rows["text"].tolist()
    assert not table["text"].str.contains(r"\(cf\.").any()
    assert not table.duplicated(["text", "code"]).any()


def test_cold_start_options(naf2008, notes_fr):
    labels_only = datamod.build_cold_start(
        naf2008,
        notes_fr,
        datamod.ColdStartConfig(
            ancestor_labels=(), ancestor_text=False, note_fields=(), exclusions=False
        ),
    )
    assert set(labels_only["source"]) == {"label_subclass"}
    assert len(labels_only) == 732


def test_combine_with_labelled(naf2008, notes_fr):
    cold = datamod.build_cold_start(naf2008, notes_fr)
    labelled = datamod.load_labelled(
        FIXTURES / "labelled_sample.csv", naf2008, "text_description", "code", ["type_"]
    )
    both = datamod.combine(cold, labelled.rows)
    assert len(both) == len(cold) + 4
    assert both["type_"].fillna("").eq("").sum() == len(cold)
    with pytest.raises(datamod.DataError, match="no training rows"):
        datamod.combine(pd.DataFrame())
    assert datamod.fingerprint(cold) == datamod.fingerprint(cold.copy())
    assert datamod.fingerprint(cold) != datamod.fingerprint(both)


def test_nomenclature_from_http_url(nomenclatures_dir):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(nomenclatures_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/naf2008_hierarchy.csv"
        assert len(load_naf2008(url)) == 1728
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_s3_read_write(seaweedfs, monkeypatch, naf2008):
    for key, value in seaweedfs.items():
        if key != "bucket":
            monkeypatch.setenv(key, value)
    table = datamod.read_table(FIXTURES / "labelled_sample.csv")
    uri = f"s3://{seaweedfs['bucket']}/data/sample.parquet"
    datamod.write_table(table, uri)
    labelled = datamod.load_labelled(uri, naf2008)
    assert len(labelled.rows) == 4
    with pytest.raises(datamod.DataError, match="cannot read"):
        datamod.read_table(f"s3://{seaweedfs['bucket']}/missing.csv")
    # anonymous access is refused
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    import httpx

    response = httpx.get(
        f"{seaweedfs['AWS_ENDPOINT_URL']}/{seaweedfs['bucket']}/data/sample.parquet"
    )
    assert response.status_code == 403
