"""Annotation campaigns in Label Studio, through its HTTP API (httpx).

The functions ``autocode annotate create / progress / export`` and ``autocode loop run`` call:

- :func:`create_campaign`: a task file of ``autocode annotate sample`` → a Label Studio project
  (created, or updated: its labelling interface and settings), the descriptions not already in
  it added as tasks with the model's top-5 as predictions;
- :func:`campaign_progress`: how many of the project's tasks are done (annotated, or skipped,
  as many times as the task's overlap asks);
- :func:`export_campaign`: the project's annotations → one gold row per task (code, annotator,
  time, skipped/unsure flags, the sampling design's weight, stratum and inclusion probability),
  codes checked against the nomenclature, and Cohen's kappa where tasks were annotated twice;
  :func:`write_gold` writes it as a new version (never overwriting) with a manifest.

Label Studio's API token is the legacy token of its user (``Authorization: Token <it>``). A
Label Studio behind datalab's platform is reached at ``<platform>/s/<id>/``, where the platform
takes ``Authorization`` (a platform bearer token): its token then goes as ``X-Api-Key``, which
Label Studio reads as its own. The label-studio-sdk package is not used: its 2.x release pulls
OpenCV, NLTK and a code generator into the serving environment for a handful of REST calls.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.sax.saxutils as saxutils
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from autocode.errors import UserError
from autocode.nomenclature import Nomenclature

TOP = 5
#: the task file's columns that are not categorical inputs (autocode.annotate.campaign.to_tasks)
DESIGN_COLUMNS = (
    "task_id",
    "text",
    *(f"code_{r}" for r in range(1, TOP + 1)),
    *(f"proba_{r}" for r in range(1, TOP + 1)),
    "ic",
    "auto",
    "model_version",
    "prediction_id",
    "first_seen",
    "last_seen",
    "frequency",
    "stratum",
    "inclusion_probability",
    "weight",
    "annotate",
)
#: the names of the labelling interface's controls
CODE_CONTROL = "code"
FLAGS_CONTROL = "flags"
UNSURE = "unsure"
PAGE_SIZE = 100


class LabelStudioError(UserError):
    """Label Studio refused a request the user can fix (token, project, labelling config...)."""


class LabelStudioUnavailable(Exception):
    """Label Studio cannot be reached or failed (exit code 1: try again later)."""


# -- the client --------------------------------------------------------------------------------
class LabelStudio:
    """A Label Studio server: ``url`` (its root, e.g. ``http://127.0.0.1:8080`` or
    ``https://datalab.example.org/s/label-studio-x1y2``) and the user's API token. With
    ``platform_token``, requests carry it as ``Authorization: Bearer`` (datalab's platform
    checks it) and the API token as ``X-Api-Key``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        platform_token: str | None = None,
        timeout: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url:
            raise LabelStudioError("no Label Studio URL: give --url or set LABEL_STUDIO_URL")
        if not api_key:
            raise LabelStudioError(
                "no Label Studio API token: give --api-key or set LABEL_STUDIO_API_KEY (the "
                "service's notes show it; in Label Studio: Account & Settings)"
            )
        self.url = url.rstrip("/")
        if platform_token:
            headers = {"Authorization": f"Bearer {platform_token}", "X-Api-Key": api_key}
        else:
            headers = {"Authorization": f"Token {api_key}"}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,
            # a connection per request: servers close idle keep-alive connections (gunicorn
            # after 2 s), and a request sent on one as it closes fails without an answer
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        api_key: str | None = None,
        platform_token: str | None = None,
    ) -> LabelStudio:
        """Arguments first, then ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY`` and
        ``DATALAB_TOKEN`` (a platform token, for a Label Studio behind datalab)."""
        return cls(
            url or os.environ.get("LABEL_STUDIO_URL", ""),
            api_key or os.environ.get("LABEL_STUDIO_API_KEY", ""),
            platform_token=platform_token or os.environ.get("DATALAB_TOKEN") or None,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer; errors as :class:`LabelStudioError` (4xx: what Label Studio
        said) or :class:`LabelStudioUnavailable` (unreachable, 5xx)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio is not reachable at {self.url} ({type(exc).__name__}: {exc}); "
                "is the service running?"
            ) from None
        if response.status_code in (401, 403):
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the API token ({response.status_code}: "
                f"{_detail(response)})"
            )
        if response.status_code == 404:
            raise LabelStudioError(f"Label Studio: {method} {path}: not found")
        if response.status_code >= 500 or response.status_code in (502, 503, 504):
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} failed ({response.status_code}: {_detail(response)})"
            )
        if response.status_code >= 400:
            raise LabelStudioError(f"Label Studio refused {method} {path}: {_detail(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise LabelStudioUnavailable(
                f"{self.url}{path} did not answer JSON: is it Label Studio? "
                f"({response.text[:120]!r})"
            ) from None

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterable[dict]:
        """Every item of a paginated listing (``page``/``page_size``)."""
        page = 1
        while True:
            try:
                answer = self.request(
                    "GET", path, params={**(params or {}), "page": page, "page_size": PAGE_SIZE}
                )
            except LabelStudioError as exc:
                if page > 1 and "not found" in str(exc):  # past the last page
                    return
                raise
            if isinstance(answer, list):
                yield from answer
                return
            items = answer.get("results", answer.get("tasks", []))
            yield from items
            if len(items) < PAGE_SIZE or ("next" in answer and not answer["next"]):
                return
            page += 1


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("validation_errors") or body
        return (
            json.dumps(detail, ensure_ascii=False)[:400] if not isinstance(detail, str) else detail
        )
    return json.dumps(body, ensure_ascii=False)[:400]


# -- the labelling interface -------------------------------------------------------------------
def _attr(value: object) -> str:
    return saxutils.quoteattr(str(value))


def choice_value(nomenclature: Nomenclature, code: str) -> str:
    """What the taxonomy shows for a code: the code and its label (searchable by either)."""
    label = nomenclature.label(code)
    return f"{code} {label}".strip()


def label_config(nomenclature: Nomenclature, inputs: Sequence[str] = ()) -> str:
    """The labelling interface: the description, its categorical inputs and the model's
    suggestions, then the nomenclature as a searchable taxonomy (every level, codes chosen at
    the finest; each choice stores its code) and an "unsure" flag. Skipping is Label Studio's
    own button."""
    lines = [
        "<View>",
        '  <Header value="Description"/>',
        '  <Text name="text" value="$text"/>',
    ]
    for name in inputs:
        lines.append(f'  <Header value={_attr(name)} size="6"/>')
        lines.append(f"  <Text name={_attr('input_' + _control(name))} value={_attr('$' + name)}/>")
    lines += [
        '  <Header value="Model suggestions (top 5, probability)" size="6"/>',
        '  <Text name="suggestions" value="$suggestions"/>',
        f"  <Header value={_attr(f'Code ({nomenclature.name} {nomenclature.version})')}/>",
        f'  <Taxonomy name="{CODE_CONTROL}" toName="text" leafsOnly="true" maxUsages="1" '
        'showFullPath="true" pathSeparator=" / " placeholder="Search a code or a label"'
        ' required="true" requiredMessage="Choose a code, or skip the task">',
    ]

    def add(code: str | None, depth: int) -> None:
        for child in nomenclature.children(code):
            value = _attr(choice_value(nomenclature, child))
            indent = "  " * (depth + 2)
            if nomenclature.children(child):
                lines.append(f"{indent}<Choice value={value} alias={_attr(child)}>")
                add(child, depth + 1)
                lines.append(f"{indent}</Choice>")
            else:
                lines.append(f"{indent}<Choice value={value} alias={_attr(child)}/>")

    add(None, 0)
    lines += [
        "  </Taxonomy>",
        f'  <Choices name="{FLAGS_CONTROL}" toName="text" choice="multiple" showInline="true">',
        f'    <Choice value="{UNSURE}"/>',
        "  </Choices>",
        "</View>",
    ]
    return "\n".join(lines)


def _control(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _path(nomenclature: Nomenclature, code: str) -> list[str]:
    """The taxonomy path of a code: from its root-level ancestor down to it."""
    return [*nomenclature.ancestors(code)[::-1], code]


# -- tasks -------------------------------------------------------------------------------------
def input_columns(tasks: pd.DataFrame) -> list[str]:
    """The categorical inputs of a task file: its columns that are not the design's."""
    return [c for c in tasks.columns if c not in DESIGN_COLUMNS]


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def to_label_studio_tasks(
    tasks: pd.DataFrame, nomenclature: Nomenclature, *, model_version: str | None = None
) -> list[dict]:
    """Label Studio's import format: the task file's row as the task's data (everything
    ``export`` needs comes back from there), the suggestions as text, and one prediction per
    rank of the top-5 (score: its probability; the top-1 is the pre-annotation)."""
    out = []
    for row in tasks.to_dict(orient="records"):
        data = {key: _json_value(value) for key, value in row.items()}
        suggestions, predictions = [], []
        version = str(model_version or data.get("model_version") or "model")
        for rank in range(1, TOP + 1):
            code = nomenclature.find(data.get(f"code_{rank}"))
            if code is None:
                continue
            proba = data.get(f"proba_{rank}")
            score = float(proba) if proba is not None else None
            suggestions.append(
                f"{rank}. {choice_value(nomenclature, code)}"
                + (f" ({score:.2f})" if score is not None else "")
            )
            predictions.append(
                {
                    "model_version": f"{version} top-{rank}",
                    "score": score,
                    "result": [
                        {
                            "from_name": CODE_CONTROL,
                            "to_name": "text",
                            "type": "taxonomy",
                            "value": {"taxonomy": [_path(nomenclature, code)]},
                        }
                    ],
                }
            )
        data["suggestions"] = "\n".join(suggestions) or "(none)"
        out.append({"data": data, "predictions": predictions})
    return out


# -- campaigns ---------------------------------------------------------------------------------
@dataclass
class CampaignResult:
    """What :func:`create_campaign` did."""

    project_id: int
    title: str
    created: bool  # the project is new
    added: int  # tasks added
    already_there: int  # tasks of the file the project already had
    not_to_annotate: int  # rows of the file with annotate=false (the certainty stratum)
    total: int  # the project's tasks now
    url: str
    double_share: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def find_project(client: LabelStudio, title: str) -> dict | None:
    """The project with this title, or None."""
    for project in client.pages("/api/projects/"):
        if project.get("title") == title:
            return project
    return None


def _project_settings(
    nomenclature: Nomenclature,
    inputs: Sequence[str],
    double_share: float,
    model_version: str,
) -> dict:
    settings: dict[str, Any] = {
        "label_config": label_config(nomenclature, inputs),
        "show_skip_button": True,
        "enable_empty_annotation": False,
        "show_annotation_history": True,
        # the top-1 is what annotators start from (they see all five in the suggestions)
        "model_version": f"{model_version} top-1",
        "show_collab_predictions": True,
        "maximum_annotations": 2 if double_share > 0 else 1,
        "overlap_cohort_percentage": round(100 * double_share) if double_share > 0 else 100,
    }
    return settings


def _task_ids(client: LabelStudio, project_id: int) -> set[str]:
    ids = set()
    for task in client.pages("/api/tasks/", {"project": project_id, "fields": "all"}):
        task_id = (task.get("data") or {}).get("task_id")
        if task_id:
            ids.add(str(task_id))
    return ids


def create_campaign(
    client: LabelStudio,
    tasks: pd.DataFrame,
    nomenclature: Nomenclature,
    title: str,
    *,
    double_share: float = 0.0,
    description: str = "",
) -> CampaignResult:
    """Create the project ``title`` (or update its labelling interface and settings), then add
    the task file's rows to annotate (``annotate`` true) that it does not already have (same
    ``task_id``: the same description). ``double_share``: the share of tasks two annotators
    code (Label Studio's overlap), for the inter-annotator agreement."""
    missing = [c for c in ("task_id", "text") if c not in tasks.columns]
    if missing:
        raise LabelStudioError(
            f"the task file has no {', '.join(missing)} column: give the output of "
            "`autocode annotate sample`"
        )
    if not 0 <= double_share <= 1:
        raise LabelStudioError(f"--double-share {double_share}: a share between 0 and 1")
    if "annotate" in tasks.columns:
        to_annotate = tasks[tasks["annotate"].astype(str).str.lower().isin(["true", "1"])]
    else:
        to_annotate = tasks
    if to_annotate.empty:
        raise LabelStudioError(
            "no task to annotate in the task file (empty, or every description is already "
            "annotated)"
        )
    model_version = (
        str(to_annotate["model_version"].dropna().iloc[0])
        if ("model_version" in to_annotate.columns and to_annotate["model_version"].notna().any())
        else "model"
    )
    inputs = input_columns(tasks)
    settings = _project_settings(nomenclature, inputs, double_share, model_version)
    project = find_project(client, title)
    created = project is None
    if project is None:
        project = client.request(
            "POST", "/api/projects/", json={"title": title, "description": description, **settings}
        )
    else:
        project = client.request("PATCH", f"/api/projects/{project['id']}/", json=settings)
    project_id = int(project["id"])
    present = set() if created else _task_ids(client, project_id)
    new = to_annotate[~to_annotate["task_id"].astype(str).isin(present)]
    new = new.drop_duplicates("task_id")
    if len(new):
        payload = to_label_studio_tasks(new, nomenclature, model_version=model_version)
        client.request("POST", f"/api/projects/{project_id}/import", json=payload)
        if double_share > 0:  # the overlap is drawn again over all the tasks
            client.request("PATCH", f"/api/projects/{project_id}/", json=settings)
    total = int(client.request("GET", f"/api/projects/{project_id}/")["task_number"])
    return CampaignResult(
        project_id=project_id,
        title=title,
        created=created,
        added=len(new),
        already_there=len(to_annotate.drop_duplicates("task_id")) - len(new),
        not_to_annotate=len(tasks) - len(to_annotate),
        total=total,
        url=f"{client.url}/projects/{project_id}/data",
        double_share=double_share,
    )


def resolve_project(client: LabelStudio, project: str) -> int:
    """A project given by id or by title."""
    if project.isdigit():
        client.request("GET", f"/api/projects/{project}/")  # raises if missing
        return int(project)
    found = find_project(client, project)
    if found is None:
        raise LabelStudioError(f"no Label Studio project titled {project!r}")
    return int(found["id"])


@dataclass
class Progress:
    """A campaign's progress: tasks done (annotated or skipped as many times as their
    overlap asks) out of the project's tasks."""

    project_id: int
    done: int
    total: int
    annotations: int
    skipped: int

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.done >= self.total

    def to_dict(self) -> dict:
        return {
            "project_id": self.project_id,
            "done": self.done,
            "total": self.total,
            "annotations": self.annotations,
            "skipped": self.skipped,
            "complete": self.complete,
        }


def campaign_progress(client: LabelStudio, project: str | int) -> Progress:
    project_id = resolve_project(client, str(project))
    done = total = annotations = skipped = 0
    for task in client.pages("/api/tasks/", {"project": project_id, "fields": "all"}):
        total += 1
        made = int(task.get("total_annotations") or 0)
        cancelled = int(task.get("cancelled_annotations") or 0)
        annotations += made
        skipped += cancelled
        if made + cancelled >= int(task.get("overlap") or 1):
            done += 1
    return Progress(project_id, done, total, annotations, skipped)


# -- export ------------------------------------------------------------------------------------
@dataclass
class Export:
    """A campaign's gold rows and what was found while building them."""

    gold: pd.DataFrame
    pending: int  # tasks without any annotation (not in ``gold``)
    agreement: dict = field(default_factory=dict)

    def summary(self) -> dict:
        gold = self.gold
        return {
            "rows": len(gold),
            "coded": int(gold["code"].notna().sum()) if len(gold) else 0,
            "skipped": int(gold["skipped"].sum()) if len(gold) else 0,
            "unsure": int(gold["unsure"].sum()) if len(gold) else 0,
            "pending": self.pending,
            "agreement": self.agreement,
        }


def _annotation_code(result: Sequence[Mapping]) -> tuple[str | None, bool]:
    code, unsure = None, False
    for item in result or []:
        value = item.get("value") or {}
        if item.get("from_name") == CODE_CONTROL and value.get("taxonomy"):
            path = value["taxonomy"][0]
            code = str(path[-1]) if path else None
        if item.get("from_name") == FLAGS_CONTROL and UNSURE in (value.get("choices") or []):
            unsure = True
    return code, unsure


def _users(client: LabelStudio) -> dict[int, str]:
    try:
        users = client.request("GET", "/api/users/")
    except LabelStudioError:  # not allowed to list users: ids only
        return {}
    return {int(u["id"]): str(u.get("email") or u.get("username") or u["id"]) for u in users}


def export_campaign(client: LabelStudio, project: str | int, nomenclature: Nomenclature) -> Export:
    """The project's annotations as gold rows, one per annotated task: the first annotation
    (code or skip), and for tasks annotated twice the second one beside it. Codes are checked
    against the nomenclature: unknown ones are refused, all named in the message."""
    project_id = resolve_project(client, str(project))
    exported = client.request(
        "GET",
        f"/api/projects/{project_id}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    )
    users = _users(client)
    rows, unknown, pending = [], [], 0
    for task in exported:
        data = dict(task.get("data") or {})
        annotations = sorted(
            task.get("annotations") or [], key=lambda a: (a.get("created_at") or "", a["id"])
        )
        if not annotations:
            pending += 1
            continue
        coded = []
        for annotation in annotations:
            code, unsure = _annotation_code(annotation.get("result") or [])
            skipped = bool(annotation.get("was_cancelled"))
            if code is not None and not skipped:
                found = nomenclature.find(code)
                if found is None:
                    unknown.append((code, data.get("task_id") or task.get("id")))
                code = found
            annotator_id = annotation.get("completed_by")
            if isinstance(annotator_id, dict):
                annotator_id = annotator_id.get("id")
            coded.append(
                {
                    "code": None if skipped else code,
                    "unsure": unsure and not skipped,
                    "skipped": skipped,
                    "annotator_id": annotator_id,
                    "annotator": users.get(int(annotator_id), str(annotator_id))
                    if annotator_id is not None
                    else None,
                    "time": annotation.get("updated_at") or annotation.get("created_at"),
                    "lead_time_s": annotation.get("lead_time"),
                }
            )
        first = coded[0]
        second = coded[1] if len(coded) > 1 else None
        row = {key: value for key, value in data.items() if key != "suggestions"}
        row.update(first)
        row["label_studio_task"] = task.get("id")
        row["annotations"] = len(coded)
        row["second_code"] = second["code"] if second else None
        row["second_annotator"] = second["annotator"] if second else None
        row["second_skipped"] = second["skipped"] if second else None
        rows.append(row)
    if unknown:
        named = ", ".join(f"{code!r} (task {task})" for code, task in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise LabelStudioError(
            f"{len(unknown)} annotation(s) with codes not in {nomenclature.name} "
            f"{nomenclature.version}: {named}{more}; correct them in Label Studio (or export "
            "with the nomenclature they use)"
        )
    gold = pd.DataFrame(rows)
    if len(gold):
        gold["time"] = pd.to_datetime(gold["time"], utc=True, format="ISO8601")
        gold = _response_weights(gold)
    return Export(gold, pending, agreement(gold, nomenclature))


def _response_weights(gold: pd.DataFrame) -> pd.DataFrame:
    """``response_weight``: the design weight spread over the stratum's coded rows (weight ×
    rows / coded rows in the stratum), so that skipped tasks (non-response) do not shrink the
    traffic the coded ones stand for; NaN for rows without a code."""
    if "weight" not in gold.columns or "stratum" not in gold.columns:
        return gold
    weight = pd.to_numeric(gold["weight"], errors="coerce")
    coded = gold["code"].notna()
    stratum = gold["stratum"].astype(str)
    factor = stratum.map(
        weight.groupby(stratum).sum() / weight[coded].groupby(stratum[coded]).sum()
    )
    gold["response_weight"] = np.where(coded, weight * factor, np.nan)
    return gold


def agreement(gold: pd.DataFrame, nomenclature: Nomenclature) -> dict:
    """Cohen's kappa between the first and second annotators of the tasks coded twice, at
    each level of the nomenclature (and the raw agreement rate)."""
    from sklearn.metrics import cohen_kappa_score

    if not len(gold) or "second_code" not in gold.columns:
        return {"double_annotated": 0}
    both = gold[gold["code"].notna() & gold["second_code"].notna()]
    result: dict[str, Any] = {"double_annotated": len(both)}
    if len(both) < 2:
        return result
    by_level = {}
    for level in nomenclature.levels:
        first = [nomenclature.ancestor_at(c, level) for c in both["code"]]
        second = [nomenclature.ancestor_at(c, level) for c in both["second_code"]]
        kappa = cohen_kappa_score(first, second) if len(set(first) | set(second)) > 1 else 1.0
        by_level[level] = {
            "kappa": None if math.isnan(kappa) else round(float(kappa), 4),
            "agreement": round(
                float(np.mean([a == b for a, b in zip(first, second, strict=True)])), 4
            ),
        }
    result["levels"] = by_level
    leaf = by_level[nomenclature.leaf_level]
    result["kappa"], result["agreement"] = leaf["kappa"], leaf["agreement"]
    return result


# -- versioned gold files ----------------------------------------------------------------------
MANIFEST = "manifest.json"


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _exists(uri: str) -> bool:
    if uri.startswith("s3://"):
        from autocode.data import _split_s3, s3_client

        bucket, key = _split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # botocore's ClientError: 404 means absent
            if "404" in str(exc) or "Not Found" in str(exc):
                return False
            raise
        return True
    return Path(uri).exists()


def _write_bytes(uri: str, data: bytes) -> None:
    if uri.startswith("s3://"):
        from autocode.data import _split_s3, s3_client

        bucket, key = _split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)


def read_manifest(output: str) -> dict:
    """The manifest of a gold folder (``{"latest": file, "versions": [...]}``); empty if none."""
    from autocode.data import read_bytes

    uri = _join(output, MANIFEST)
    if not _exists(uri):
        return {"latest": None, "versions": []}
    return json.loads(read_bytes(uri))


def write_gold(
    export: Export, output: str, *, project: str | int = "", now: datetime | None = None
) -> str:
    """Write the gold rows as a new Parquet file in ``output`` (a folder, local or
    ``s3://bucket/prefix``): ``gold-<UTC time>.parquet``, never overwriting one, then the
    manifest (every version, the latest first in ``latest``). Returns the file's URI."""
    import io

    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    name = f"gold-{stamp}.parquet"
    uri = _join(output, name)
    if _exists(uri):
        raise LabelStudioError(f"{uri} exists already: gold versions are never overwritten")
    buffer = io.BytesIO()
    export.gold.to_parquet(buffer, index=False)
    _write_bytes(uri, buffer.getvalue())
    manifest = read_manifest(output)
    entry = {"file": name, "created": now.isoformat(), "project": str(project), **export.summary()}
    manifest["versions"] = [*manifest.get("versions", []), entry]
    manifest["latest"] = name
    _write_bytes(_join(output, MANIFEST), json.dumps(manifest, indent=2).encode())
    return uri
