"""The GitOps tree (deploy/gitops): each overlay builds with kustomize; its Argo CD objects are
accepted, strictly, by a real API server with Argo CD's own CRDs installed; each Application's
chart renders, with the value files it names, into objects valid for Kubernetes that its project
permits; the platform accepts the configuration the prod values make; the API follows the
registry's alias (a promotion changes nothing in git) and a new API image is one line.

kustomize and the CRDs come from their Go modules (`make gitops-tools`, versions in the
Makefile); missing, they are a test failure naming the target, never a skip."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from tests.kube.testenv import KubeCluster, wait_for

from .chart import KUBERNETES, PRODUCTION_SECRETS, merged, one, platform_container, settings_in_pod

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "deploy" / "gitops"
OVERLAYS = ("dev", "prod")
REPO_URL = "https://github.com/example-org/datalab.git"


def _make_variable(name: str) -> str:
    found = re.search(rf"^{name} := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, f"{name} is not in the Makefile"
    return found.group(1)


KUSTOMIZE = (
    REPO / ".cache" / "kustomize" / _make_variable("KUSTOMIZE_VERSION") / "bin" / "kustomize"
)
ARGOCD_CRDS = REPO / ".cache" / "argo-cd" / _make_variable("ARGOCD_VERSION") / "crds"


def _tools() -> None:
    missing = [str(p) for p in (KUSTOMIZE, ARGOCD_CRDS / ".done") if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make gitops-tools`")


def build(overlay: str) -> list[dict[str, Any]]:
    _tools()
    done = subprocess.run(
        [str(KUSTOMIZE), "build", str(GITOPS / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def application(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == "Application" and o["metadata"]["name"] == name]
    return found


def render_application(app: dict[str, Any], replace: dict[str, str] | None = None) -> list[dict]:
    """What Argo CD would deploy: the chart at the Application's path in this repository, with
    its value files in order (``replace`` maps a value file's path to other text)."""
    source = app["spec"]["source"]
    assert source["repoURL"] == REPO_URL
    chart = (REPO / source["path"]).resolve()
    values: dict[str, Any] = {}
    for name in source["helm"]["valueFiles"]:
        path = (chart / name).resolve()
        assert path.is_relative_to(REPO), f"{name} is outside the repository"
        text = (replace or {}).get(str(path)) or path.read_text()
        values = merged(values, yaml.safe_load(text) or {})
    with helm_python.Chart.load(chart) as loaded:
        files = loaded.render(
            values,
            name=source["helm"]["releaseName"],
            namespace=app["spec"]["destination"]["namespace"],
        )
    objects: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if not path.endswith("NOTES.txt"):
            objects.extend(obj for obj in yaml.safe_load_all(text) if obj)
    return objects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_into_the_project_and_its_two_applications(overlay: str) -> None:
    objects = build(overlay)
    names = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert names == [
        ("AppProject", "datalab"),
        ("Application", "autocode-api"),
        ("Application", "datalab"),
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {"argocd"}
    for app in (o for o in objects if o["kind"] == "Application"):
        source = app["spec"]["source"]
        assert source["targetRevision"] == ("main" if overlay == "dev" else "v0.1.0")
        assert source["helm"]["valueFiles"][-1].endswith(
            f"/overlays/{overlay}/" + (f"{app['metadata']['name']}-values.yaml")
        )
        assert app["spec"]["syncPolicy"]["automated"]["prune"] is (overlay == "dev")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_chart_renders_valid_objects_its_project_permits(overlay: str) -> None:
    objects = build(overlay)
    project = one(objects, "AppProject")["spec"]
    destinations = {(d["server"], d["namespace"]) for d in project["destinations"]}
    cluster_kinds = {(k["group"], k["kind"]) for k in project["clusterResourceWhitelist"]}
    for app in (o for o in objects if o["kind"] == "Application"):
        assert app["spec"]["project"] == "datalab"
        assert app["spec"]["source"]["repoURL"] in project["sourceRepos"]
        destination = app["spec"]["destination"]
        assert (destination["server"], destination["namespace"]) in destinations
        rendered = render_application(app)
        assert rendered, app["metadata"]["name"]
        for obj in rendered:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "Namespace"):
                group = obj["apiVersion"].rpartition("/")[0]
                assert (group, obj["kind"]) in cluster_kinds, obj["kind"]
            else:
                assert obj["metadata"].get("namespace") in (None, destination["namespace"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_platform_accepts_what_the_overlays_values_make(overlay: str, tmp_path: Path) -> None:
    rendered = render_application(application(build(overlay), "datalab"))
    config = one(rendered, "ConfigMap")["data"]["datalab.yaml"]
    secrets = copy.deepcopy(PRODUCTION_SECRETS)
    settings = settings_in_pod(
        config, platform_container(rendered), lambda n, k: secrets[n][k], tmp_path
    )
    assert settings.backend.name == "kubernetes"
    assert settings.server.public_url == (
        "https://datalab.example.org" if overlay == "prod" else "https://datalab-dev.example.org"
    )
    # the database is migrated before each sync by the chart's hook Job
    assert one(rendered, "Job", "datalab-migrate")["metadata"]["annotations"]["helm.sh/hook"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_follows_the_registry_alias_and_its_credentials_are_not_in_git(
    overlay: str,
) -> None:
    rendered = render_application(application(build(overlay), "autocode-api"))
    deployment = one(rendered, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AUTOCODE_API_MODEL"] == "models:/autocode-naf@champion"  # a promotion: no commit
    assert container["envFrom"] == [{"secretRef": {"name": "autocode-api-credentials"}}]
    assert [
        o for o in rendered if o["kind"] == "Secret" and "keys" not in o["metadata"]["name"]
    ] == []
    text = "\n".join(p.read_text() for p in GITOPS.rglob("*.yaml"))
    assert "changeme" not in text and "password:" not in text.lower()


def test_a_new_api_image_is_a_one_line_change() -> None:
    app = application(build("prod"), "autocode-api")
    values_file = GITOPS / "overlays" / "prod" / "autocode-api-values.yaml"
    text = values_file.read_text()
    lines = [line for line in text.splitlines() if "ghcr.io/example-org/autocode-api:" in line]
    assert len(lines) == 1
    changed = text.replace(lines[0], lines[0].replace(":0.1.0", ":0.2.0"))
    pairs = zip(text.splitlines(), changed.splitlines(), strict=True)
    assert sum(a != b for a, b in pairs) == 1
    before = render_application(app)
    after = render_application(app, {str(values_file.resolve()): changed})

    def images(objects: list[dict[str, Any]]) -> set[str]:
        return set(re.findall(r"'image': '([^']+)'", str(objects)))

    assert images(before) == {"ghcr.io/example-org/autocode-api:0.1.0"}
    assert images(after) == {"ghcr.io/example-org/autocode-api:0.2.0"}


def _install_crds(kube_cluster: KubeCluster) -> None:
    with kube_cluster.client() as api:
        for path in sorted(ARGOCD_CRDS.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            answer = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            assert answer.status_code in (201, 409), answer.text
            name = crd["metadata"]["name"]

            def established(name: str = name) -> bool:
                status = api.get(
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                ).json()["status"]
                return any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in status.get("conditions") or []
                )

            wait_for(established, f"the CRD {name} established")
        answer = api.post("/api/v1/namespaces", json={"metadata": {"name": "argocd"}})
        assert answer.status_code in (201, 409), answer.text


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_server_accepts_the_overlay_with_argo_cds_crds(
    overlay: str, kube_cluster: KubeCluster
) -> None:
    _tools()
    _install_crds(kube_cluster)
    plural = {"Application": "applications", "AppProject": "appprojects"}
    strict = {"fieldValidation": "Strict", "dryRun": "All"}
    with kube_cluster.client() as api:
        for obj in build(overlay):
            url = f"/apis/argoproj.io/v1alpha1/namespaces/argocd/{plural[obj['kind']]}"
            answer = api.post(url, json=obj, params=strict)
            assert answer.status_code == 201, (obj["kind"], answer.text)
            # the check can fail: a misspelt field is refused by the same request
            typo = copy.deepcopy(obj)
            typo["spec"]["destinaton"] = {}
            refused = api.post(url, json=typo, params=strict)
            assert refused.status_code in (400, 422), refused.text
            assert "destinaton" in refused.text
