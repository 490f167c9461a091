"""The loop's Argo Workflows templates: generated with hera, validated strictly against Argo's
schema (hera's models of its OpenAPI definitions, unknown keys refused), each step a real
`autocode` command line, and accepted by a real kube-apiserver with Argo's own CRDs (full
schemas, strict field validation) installed."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml

from autocode import cli
from autocode.loop.argo import ArgoError, ArgoSettings, manifests, validate
from autocode.loop.run import STEPS

from ..conftest import run

SETTINGS = ArgoSettings(
    image="registry.example/autocode-train:0.1.0",
    namespace="coding",
    model="naf-test",
    tracking_uri="http://mlflow.coding:5000",
    s3_endpoint="http://s3.coding:8333",
)


def parses(args: list[str]) -> None:
    """``args`` parse as an `autocode` command line (options known, required ones given)
    without running it: click's own parser, group by group."""
    command: Any = typer.main.get_command(cli.app)
    context = command.make_context("autocode", list(args))
    while hasattr(command, "resolve_command"):
        protected = getattr(context, "_protected_args", None)  # click >= 8.2 names it so
        rest = [*(getattr(context, "protected_args", []) if protected is None else protected),
                *context.args]  # fmt: skip
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)


def substituted(args: list[str], manifest: dict[str, Any]) -> list[str]:
    """``args`` as Argo runs them: workflow parameters replaced by the template's values."""
    values = {p["name"]: p["value"] for p in manifest["spec"]["arguments"]["parameters"]}
    out = []
    for arg in args:
        for name, value in values.items():
            arg = arg.replace(f"{{{{workflow.parameters.{name}}}}}", value)
        out.append(arg.replace("{{workflow.name}}", "autocode-loop-x1"))
    assert not [a for a in out if "{{" in a], out
    return out


def test_templates_validate_and_run_real_commands():
    built = manifests(SETTINGS)
    assert sorted(built) == [
        "autocode-loop-cron.yaml", "autocode-loop.yaml", "autocode-train.yaml",
        "autocode-tune.yaml",
    ]  # fmt: skip
    loop = built["autocode-loop.yaml"]
    assert loop["kind"] == "WorkflowTemplate" and loop["metadata"]["namespace"] == "coding"
    steps = [group[0]["name"] for group in loop["spec"]["templates"][-1]["steps"]]
    assert steps == list(STEPS)  # one after the other, in the loop's order
    containers = {t["name"]: t["container"] for t in loop["spec"]["templates"] if "container" in t}
    for container in containers.values():
        assert container["image"] == SETTINGS.image and container["command"] == ["autocode"]
        parses(substituted(container["args"], loop))
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "autocode-s3"
        assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # never inlined
        assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://s3.coding:8333"
    retrain = next(t for t in loop["spec"]["templates"] if t["name"] == "retrain")
    raw = retrain["inputs"]["artifacts"][0]
    assert raw["raw"]["data"] == "{{workflow.parameters.config}}"
    assert raw["path"] in containers["retrain"]["args"]
    assert "--no-fail-on-keep" in containers["promote"]["args"]  # a refusal is no failure
    for name, container in containers.items():  # each pod runs its own step of `loop run`
        assert container["args"][:2] == ["loop", "run"] and container["args"][-2:] == [
            "--steps", name,
        ]  # fmt: skip
    wait = next(t for t in loop["spec"]["templates"] if t["name"] == "wait")
    assert wait["retryStrategy"]["expression"] == "asInt(lastRetry.exitCode) == 3"
    assert wait["retryStrategy"]["backoff"]["duration"] == "1h"
    assert "LABEL_STUDIO_API_KEY" not in {e["name"] for e in containers["retrain"]["env"]}
    for file in ("autocode-train.yaml", "autocode-tune.yaml"):
        for template in built[file]["spec"]["templates"]:
            if "container" in template:
                parses(substituted(template["container"]["args"], built[file]))
    cron = built["autocode-loop-cron.yaml"]
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"] == {"name": "autocode-loop"}
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_validation_refuses_what_argo_would():
    loop = manifests(SETTINGS)["autocode-loop.yaml"]
    typo = yaml.safe_load(yaml.safe_dump(loop))
    typo["spec"]["templates"][0]["container"]["imagePullPolcy"] = "Always"
    with pytest.raises(ArgoError, match=r"keys not in the Argo schema.*imagePullPolcy"):
        validate(typo)
    wrong = yaml.safe_load(yaml.safe_dump(loop))
    wrong["spec"]["entrypoint"] = "nowhere"
    with pytest.raises(ArgoError, match="entrypoint 'nowhere' is not a template"):
        validate(wrong)
    wrong = yaml.safe_load(yaml.safe_dump(loop))
    wrong["spec"]["templates"][-1]["steps"][0][0]["template"] = "gone"
    with pytest.raises(ArgoError, match="unknown template 'gone'"):
        validate(wrong)
    wrong = yaml.safe_load(yaml.safe_dump(loop))
    wrong["spec"]["parallelism"] = "many"
    with pytest.raises(ArgoError, match="parallelism"):
        validate(wrong)
    with pytest.raises(ArgoError, match=r"not an argoproj\.io/v1alpha1"):
        validate({**loop, "kind": "Deployment"})


def test_cli_writes_the_files(monkeypatch, capsys, tmp_path):
    code, _, err = run(
        monkeypatch, capsys, "loop", "argo", "--output", str(tmp_path / "argo"),
        "--image", "img:1", "--namespace", "ns", "--schedule", "30 2 * * *",
    )  # fmt: skip
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "argo").iterdir())
    assert len(files) == 4
    cron = yaml.safe_load((tmp_path / "argo" / "autocode-loop-cron.yaml").read_text())
    assert cron["spec"]["schedules"] == ["30 2 * * *"]
    for path in (tmp_path / "argo").iterdir():
        validate(yaml.safe_load(path.read_text()))


REPO = Path(__file__).resolve().parents[3]


def _make_variable(name: str) -> str:
    found = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"{name} is not in the Makefile"
    return found.group(1)


#: Argo Workflows' own CRDs with their full schemas (manifests/base/crds/full of its Go module,
#: fetched by `make gitops-tools`): the API server then checks every field of the templates.
ARGO_CRDS = REPO / ".cache" / "argo-workflows" / _make_variable("ARGO_WORKFLOWS_VERSION") / "crds"
KINDS = {
    "WorkflowTemplate": ("workflowtemplates", ["wftmpl"]),
    "CronWorkflow": ("cronworkflows", ["cwf", "cronwf"]),
}


def crd(kind: str) -> dict[str, Any]:
    plural, _ = KINDS[kind]
    path = ARGO_CRDS / f"argoproj.io_{plural}.yaml"
    if not path.exists():
        pytest.fail(f"missing {path}: run `make gitops-tools`")
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.mark.slow
def test_applied_to_the_control_plane(kube_cluster):
    with kube_cluster.client() as api:
        _apply(api)


def _apply(api: httpx.Client) -> None:
    for kind in KINDS:
        response = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                            json=crd(kind))  # fmt: skip
        assert response.status_code in (201, 409), response.text
    deadline = time.monotonic() + 60
    for kind, (plural, _) in KINDS.items():
        while True:
            body = _ok(
                api.get(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.argoproj.io"
                )
            )
            conditions = {
                c["type"]: c["status"] for c in (body.get("status") or {}).get("conditions") or []
            }
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, f"{kind} CRD not established: {body.get('status')}"
            time.sleep(0.2)
    namespace = f"autocode-{uuid.uuid4().hex[:6]}"
    _ok(api.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": namespace}}))  # fmt: skip
    settings = ArgoSettings(namespace=namespace, image="registry.invalid/autocode-train:1")
    for file, manifest in manifests(settings).items():
        plural = KINDS[manifest["kind"]][0]
        url = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/{plural}"
        created = _ok(api.post(url, params={"fieldValidation": "Strict"}, json=manifest))
        stored = _ok(api.get(f"{url}/{manifest['metadata']['name']}"))
        assert stored["spec"] == manifest["spec"], file  # valid as generated: nothing pruned
        assert stored["metadata"]["uid"] == created["metadata"]["uid"]
    # the API server refuses what is not a valid object of these kinds: a misspelt field of a
    # template (Argo's schema, strictly), a name Kubernetes refuses
    typo = manifests(settings)["autocode-train.yaml"]
    typo["metadata"]["name"] = "autocode-typo"
    typo["spec"]["templates"][0]["retryStratgy"] = {"limit": 1}
    url = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtemplates"
    response = api.post(url, params={"fieldValidation": "Strict"}, json=typo)
    assert response.status_code in (400, 422) and "retryStratgy" in response.text, response.text
    bad = manifests(settings)["autocode-train.yaml"]
    bad["metadata"]["name"] = "Not_A_Valid_Name"
    url = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtemplates"
    response = api.post(url, json=bad)
    assert response.status_code == 422 and "Not_A_Valid_Name" in response.text
    listed = _ok(api.get(url))["items"]
    assert {i["metadata"]["name"] for i in listed} == {
        "autocode-train",
        "autocode-tune",
        "autocode-loop",
    }
