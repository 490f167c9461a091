"""Campaigns in a real Label Studio (``label_studio`` fixture): ``autocode annotate create`` from a
task file drawn from logged traffic of dev1000's descriptions, the tests playing two experts
through Label Studio's API with the file's codes, ``progress``, ``export`` to versioned gold
files (local and S3) with Cohen's kappa, and bad input (empty, unknown codes, Label Studio
down), each named in one line. A screenshot of the task page in Chromium."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from autocode.annotate.campaign import sample_campaign
from autocode.annotate.labelstudio import (
    LabelStudio,
    campaign_progress,
    choice_value,
    label_config,
)
from autocode.monitor.query import Dataset, Window

from ..conftest import REPO, free_port, run
from ..monitor.conftest import record
from .conftest import compact_log

# The tests marked slow use the real server: its first use starts it (about a minute, longer
# when `make label-studio-env` has to build it first).

DAY = datetime(2026, 11, 2, tzinfo=UTC)
WINDOW = "2026-11-02..2026-11-04"
DEV1000 = REPO.parent / "shared" / "data" / "annotations" / "labelstudio_dev1000.csv"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def experts(naf2008) -> pd.DataFrame:
    """60 descriptions of dev1000 with their experts' codes (in the nomenclature)."""
    table = pd.read_csv(DEV1000, dtype=str, keep_default_na=False)
    table["code"] = table["code"].map(naf2008.find)
    table = table[table["code"].notna()].drop_duplicates("text_description")
    return table.head(60).reset_index(drop=True)


@pytest.fixture(scope="module")
def logs(tmp_path_factory, experts, naf2008) -> Path:
    """Two days of traffic of those descriptions, each logged with a top-2 whose first code is
    the expert's for two thirds of them (ICs spread), as the API logs it, compacted."""
    rng = np.random.default_rng(11)
    leaves = naf2008.codes()
    records = []
    for i, row in experts.iterrows():
        right = i % 3 != 0
        other = leaves[(leaves.index(row["code"]) + 7) % len(leaves)]
        top = [row["code"], other] if right else [other, row["code"]]
        for repeat in range(1 + int(rng.integers(0, 3))):
            ts = DAY + timedelta(minutes=37 * i + repeat)
            ic = float(np.clip(0.1 + 0.8 * rng.random(), 0, 1))
            log = record(
                ts,
                code=top[0],
                ic=ic,
                text=row["text_description"],
                categorical={"type_": row["type_"], "nature": row["nature"]},
            )
            log["codes"] = top
            records.append(log)
    return compact_log(tmp_path_factory.mktemp("ls-logs"), records)


def draw(logs: Path, size: int, seed: int, output: Path) -> pd.DataFrame:
    tasks = sample_campaign(Dataset(str(logs)), Window.parse(WINDOW), size, seed).tasks
    tasks.to_parquet(output, index=False)
    return tasks


@pytest.fixture(scope="module")
def experts_clients(label_studio) -> Iterator[tuple[LabelStudio, LabelStudio]]:
    """The two experts' API clients."""
    with (
        LabelStudio(label_studio["url"], label_studio["api_key"]) as first,
        LabelStudio(label_studio["url"], label_studio["api_key_2"]) as second,
    ):
        yield first, second


def ls_env(monkeypatch, label_studio) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["api_key"])
    monkeypatch.delenv("DATALAB_TOKEN", raising=False)


def tasks_of(ls: LabelStudio, project_id: int) -> list[dict]:
    return list(ls.pages("/api/tasks/", {"project": project_id, "fields": "all"}))


def annotate(ls: LabelStudio, task: dict, code: str | None, naf, *, unsure: bool = False) -> None:
    """What an expert does in the task page: a code (its taxonomy path), or skip (None)."""
    if code is None:
        body = {"result": [], "was_cancelled": True}
    else:
        path = [*naf.ancestors(code)[::-1], code]
        result = [
            {
                "from_name": "code",
                "to_name": "text",
                "type": "taxonomy",
                "value": {"taxonomy": [path]},
            }
        ]
        if unsure:
            result.append(
                {
                    "from_name": "flags",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["unsure"]},
                }
            )
        body = {"result": result, "was_cancelled": False}
    ls.request("POST", f"/api/tasks/{task['id']}/annotations/", json=body)


# -- the labelling interface ---------------------------------------------------------------------
def test_label_config_holds_the_whole_hierarchy_as_a_taxonomy(naf2008) -> None:
    config = ET.fromstring(label_config(naf2008, ["type_", "nature"]))  # noqa: S314 (ours)
    [taxonomy] = config.iter("Taxonomy")
    assert taxonomy.get("leafsOnly") == "true" and taxonomy.get("placeholder")
    leaves, depths = [], set()

    def walk(node: ET.Element, depth: int) -> None:
        for choice in node.findall("Choice"):
            if choice.findall("Choice"):
                walk(choice, depth + 1)
            else:
                leaves.append(choice.get("alias"))
                depths.add(depth)

    walk(taxonomy, 1)
    assert leaves == naf2008.codes() and depths == {len(naf2008.levels)} == {5}
    first = taxonomy.find("Choice")
    assert first is not None and first.get("alias") == "A"
    assert first.get("value", "").startswith("A Agriculture")  # searchable by code or label
    names = {text.get("name"): text.get("value") for text in config.iter("Text")}
    assert names["input_type_"] == "$type_" and names["text"] == "$text"
    assert [c.get("value") for c in config.iter("Choice") if c.get("value") == "unsure"]


# -- create, progress, export ------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_campaign_created_updated_annotated_and_exported(
    label_studio, experts_clients, logs, experts, naf2008, tmp_path, monkeypatch, capsys, seaweedfs
) -> None:
    ls_env(monkeypatch, label_studio)
    first = draw(logs, 24, 1, tmp_path / "tasks-1.parquet")
    code, out, err = run(
        monkeypatch,
        capsys,
        "annotate", "create", "--tasks", str(tmp_path / "tasks-1.parquet"),
        "--project", "NAF campaign", "--double-share", "0.5", "--json",
    )  # fmt: skip
    assert code == 0, err
    created = json.loads(out)
    assert created["created"] and created["added"] == 24 == created["total"]
    ls, other_ls = experts_clients
    project_id = created["project_id"]
    project = ls.request("GET", f"/api/projects/{project_id}/")
    assert "<Taxonomy" in project["label_config"] and project["show_skip_button"]
    assert project["maximum_annotations"] == 2

    tasks = tasks_of(ls, project_id)
    assert sorted(t["data"]["task_id"] for t in tasks) == sorted(first["task_id"])
    by_id = first.set_index("task_id")
    for task in tasks:
        data, row = task["data"], by_id.loc[task["data"]["task_id"]]
        assert data["text"] == row["text"] and data["nature"] == row["nature"]
        assert data["weight"] == pytest.approx(row["weight"]) and data["stratum"] == row["stratum"]
        predictions = sorted(task["predictions"], key=lambda p: p["model_version"])
        assert [p["model_version"] for p in predictions] == ["3 top-1", "3 top-2"]
        assert predictions[0]["score"] == pytest.approx(row["proba_1"], abs=1e-6)
        path = predictions[0]["result"][0]["value"]["taxonomy"][0]
        assert path[-1] == naf2008.find(row["code_1"]) and len(path) == 5
        assert data["suggestions"].startswith(f"1. {naf2008.find(row['code_1'])} ")
    overlaps = [t["overlap"] for t in tasks]
    assert set(overlaps) == {1, 2} and abs(overlaps.count(2) - 12) <= 1  # half, twice

    # again with a larger draw: only the descriptions not there yet are added
    second = draw(logs, 36, 2, tmp_path / "tasks-2.parquet")
    code, out, err = run(
        monkeypatch, capsys, "annotate", "create", "-t", str(tmp_path / "tasks-2.parquet"),
        "-p", "NAF campaign", "--double-share", "0.5", "--json",
    )  # fmt: skip
    assert code == 0, err
    updated = json.loads(out)
    new = set(second["task_id"]) - set(first["task_id"])
    assert not updated["created"] and updated["added"] == len(new) > 0
    assert updated["already_there"] == 36 - len(new) and updated["total"] == 24 + len(new)
    tasks = tasks_of(ls, project_id)
    assert len({t["data"]["task_id"] for t in tasks}) == len(tasks) == 24 + len(new)

    # the experts: A codes every task but four (left pending), skips one, is unsure of one;
    # B codes the tasks annotated twice, disagreeing on a few
    expert_code = dict(zip(experts["text_description"], experts["code"], strict=True))
    leaves = naf2008.codes()
    doubled: list[tuple[str, str]] = []
    pending = tasks[-4:]
    for i, task in enumerate(tasks[:-4]):
        truth = expert_code[task["data"]["text"]]
        annotate(ls, task, None if i == 0 else truth, naf2008, unsure=i == 1)
        if task["overlap"] == 2 and i > 0:
            disagree = len(doubled) % 4 == 3
            theirs = leaves[(leaves.index(truth) + 1) % len(leaves)] if disagree else truth
            annotate(other_ls, task, theirs, naf2008)
            doubled.append((truth, theirs))
    progress = campaign_progress(ls, "NAF campaign")
    double_pending = sum(1 for i, t in enumerate(tasks[:-4]) if t["overlap"] == 2 and i == 0)
    assert progress.total == len(tasks) and not progress.complete
    assert progress.done == len(tasks) - 4 - double_pending
    assert progress.skipped == 1
    code, out, err = run(
        monkeypatch, capsys, "annotate", "progress", "-p", str(project_id), "--json"
    )
    assert code == 0 and json.loads(out)["done"] == progress.done

    # export: a new version each time, never overwritten; the manifest points at the latest
    gold_dir = tmp_path / "gold"
    code, out, err = run(
        monkeypatch, capsys, "annotate", "export", "-p", "NAF campaign", "-o", str(gold_dir)
    )
    assert code == 0, err
    assert "Cohen's kappa on" in err
    code, out, err = run(
        monkeypatch, capsys, "annotate", "export", "-p", "NAF campaign", "-o", str(gold_dir),
        "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    files = sorted(gold_dir.glob("gold-*.parquet"))
    manifest = json.loads((gold_dir / "manifest.json").read_text())
    assert len(files) == 2 and [v["file"] for v in manifest["versions"]] == [f.name for f in files]
    assert manifest["latest"] == files[-1].name and summary["file"] == str(files[-1])
    gold = pd.read_parquet(files[-1])
    assert len(gold) == len(tasks) - 4 and summary["pending"] == 4
    assert set(gold["task_id"]) == {t["data"]["task_id"] for t in tasks[:-4]}
    assert not set(gold["task_id"]) & {t["data"]["task_id"] for t in pending}
    assert gold["skipped"].sum() == 1 and gold.loc[gold["skipped"], "code"].isna().all()
    assert gold["unsure"].sum() == 1
    coded = gold[~gold["skipped"]]
    assert (coded["code"] == coded["text"].map(expert_code)).all()
    assert set(gold["annotator"]) == {label_studio["username"]}
    assert set(gold["second_annotator"].dropna()) == {label_studio["username_2"]}
    assert gold["time"].dt.tz is not None
    for column in ("text", "type_", "nature", "weight", "stratum", "inclusion_probability"):
        assert gold[column].notna().all(), column
    by_task = pd.concat([first, second]).drop_duplicates("task_id").set_index("task_id")
    assert gold["weight"].to_numpy() == pytest.approx(
        by_task.loc[gold["task_id"], "weight"].to_numpy()
    )
    # non-response: the skipped task's weight goes to its stratum's coded rows
    responding = gold.groupby("stratum")["weight"].sum()
    assert gold.groupby("stratum")["response_weight"].sum().to_numpy() == pytest.approx(
        responding.to_numpy()
    )

    # Cohen's kappa: sklearn's on the pairs the experts gave
    agreement = summary["agreement"]
    firsts, seconds = zip(*doubled, strict=True)
    assert agreement["double_annotated"] == len(doubled) >= 8
    assert agreement["kappa"] == pytest.approx(cohen_kappa_score(firsts, seconds), abs=1e-4)
    assert agreement["levels"]["section"]["kappa"] >= agreement["kappa"]

    # to S3, with the user's credentials
    for key, value in seaweedfs.items():
        if key != "bucket":
            monkeypatch.setenv(key, value)
    target = f"s3://{seaweedfs['bucket']}/gold/naf"
    code, out, err = run(
        monkeypatch, capsys, "annotate", "export", "-p", "NAF campaign", "-o", target, "--json"
    )
    assert code == 0, err
    written = json.loads(out)["file"]
    from autocode import data as datamod

    assert len(datamod.read_table(written)) == len(gold)
    remote = json.loads(datamod.read_bytes(f"{target}/manifest.json"))
    assert remote["latest"] == written.rsplit("/", 1)[1]


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_unknown_codes_are_refused_by_name(
    label_studio, experts_clients, logs, naf2008, tmp_path, monkeypatch, capsys
) -> None:
    ls_env(monkeypatch, label_studio)
    draw(logs, 6, 3, tmp_path / "tasks.parquet")
    code, out, err = run(
        monkeypatch, capsys, "annotate", "create", "-t", str(tmp_path / "tasks.parquet"),
        "-p", "unknown codes", "--json",
    )  # fmt: skip
    assert code == 0, err
    ls = experts_clients[0]
    tasks = tasks_of(ls, json.loads(out)["project_id"])
    annotate(ls, tasks[0], naf2008.codes()[0], naf2008)
    for task, bad in zip(tasks[1:3], ["99.99Z", "ZZ"], strict=True):
        body = {
            "result": [
                {
                    "from_name": "code",
                    "to_name": "text",
                    "type": "taxonomy",
                    "value": {"taxonomy": [["A", bad]]},
                }
            ]
        }
        ls.request("POST", f"/api/tasks/{task['id']}/annotations/", json=body)
    code, out, err = run(
        monkeypatch, capsys, "annotate", "export", "-p", "unknown codes", "-o", str(tmp_path / "g")
    )
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "2 annotation(s) with codes not in NAF rev2-2008" in err
    assert "'99.99Z'" in err and "'ZZ'" in err
    assert not (tmp_path / "g").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_empty_inputs_give_one_line(label_studio, logs, tmp_path, monkeypatch, capsys) -> None:
    ls_env(monkeypatch, label_studio)
    empty = tmp_path / "empty.csv"
    empty.write_text("task_id,text,annotate\n")
    code, _, err = run(monkeypatch, capsys, "annotate", "create", "-t", str(empty), "-p", "x")
    assert code == 2 and "has no rows" in err and err.count("\n") == 1
    # an empty window: nothing logged then
    code, _, err = run(
        monkeypatch, capsys, "annotate", "create", "-d", str(logs), "-w", "2026-12-01..2026-12-02",
        "-n", "5", "-p", "x",
    )  # fmt: skip
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "Traceback" not in err
    # a project without annotations: nothing to export
    draw(logs, 4, 4, tmp_path / "t.parquet")
    assert (
        run(
            monkeypatch,
            capsys,
            "annotate",
            "create",
            "-t",
            str(tmp_path / "t.parquet"),
            "-p",
            "idle",
        )[0]
        == 0
    )
    code, _, err = run(
        monkeypatch, capsys, "annotate", "export", "-p", "idle", "-o", str(tmp_path / "g")
    )
    assert code == 2 and "no annotation yet (4 task(s) pending)" in err
    code, _, err = run(monkeypatch, capsys, "annotate", "progress", "-p", "no such project")
    assert code == 2 and "no Label Studio project titled 'no such project'" in err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_label_studio_down_or_refusing(label_studio, logs, tmp_path, monkeypatch, capsys) -> None:
    draw(logs, 4, 5, tmp_path / "t.parquet")
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "whatever-token")
    for args in (
        ["create", "-t", str(tmp_path / "t.parquet"), "-p", "x"],
        ["progress", "-p", "x"],
        ["export", "-p", "x", "-o", str(tmp_path / "g")],
    ):
        code, _, err = run(monkeypatch, capsys, "annotate", *args)
        assert code == 1, (args, err)
        assert err.startswith("error: Label Studio is not reachable at http://127.0.0.1:")
        assert err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-token-of-anyone")
    code, _, err = run(monkeypatch, capsys, "annotate", "progress", "-p", "x")
    assert code == 2 and "refused the API token (401" in err
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    code, _, err = run(monkeypatch, capsys, "annotate", "progress", "-p", "x")
    assert code == 2 and "no Label Studio API token" in err


# -- what the annotators see -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_task_page_screenshot(
    label_studio, experts_clients, logs, naf2008, tmp_path, monkeypatch, capsys
) -> None:
    """The task page in Chromium: the description, its inputs, the model's suggestions, the
    taxonomy with the top-1 pre-annotated, and the unsure flag (test-artifacts/screenshots)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    ls_env(monkeypatch, label_studio)
    draw(logs, 5, 6, tmp_path / "t.parquet")
    code, out, err = run(
        monkeypatch, capsys, "annotate", "create", "-t", str(tmp_path / "t.parquet"),
        "-p", "screenshot", "--json",
    )  # fmt: skip
    assert code == 0, err
    project_id = json.loads(out)["project_id"]
    task = tasks_of(experts_clients[0], project_id)[0]
    top1 = naf2008.find(task["data"]["code_1"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{label_studio['url']}/user/login/")
            page.fill("input[name=email]", label_studio["username"])
            page.fill("input[name=password]", label_studio["password"])
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)
            page.goto(f"{label_studio['url']}/projects/{project_id}/data?task={task['id']}")
            page.get_by_text(task["data"]["text"][:40]).first.wait_for(timeout=90_000)
            page.get_by_text("Model suggestions").first.wait_for(timeout=30_000)
            page.wait_for_timeout(2000)
            page.screenshot(path=str(SCREENSHOTS / "label-studio-task.png"))
            # the pre-annotation: the top-1's full path, chosen in the taxonomy
            taxonomy = page.locator(".htx-taxonomy").first
            chosen = taxonomy.inner_text()
            assert choice_value(naf2008, top1) in chosen and " / " in chosen
            # the taxonomy opens, searchable by a word of a label
            taxonomy.click()
            search = page.get_by_placeholder("Search").last  # once the dropdown is open
            search.fill("boulang")
            found = page.get_by_text("10.7 Fabrication de produits de boulangerie")
            found.first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "label-studio-taxonomy-search.png"))
        finally:
            browser.close()
    with httpx.Client() as http:
        assert http.get(f"{label_studio['url']}/health").status_code == 200
