"""The region settings Onyxia's charts read (ingress class, cert-manager, init script, network
policy, tolerations, node selector, startup probe, OpenShift SCC, package mirrors, disk and GPU
resources, sliders), with Onyxia's names and defaults, reach the injection context and the
values of a real Onyxia chart."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from datalab.catalog import CatalogConfig, CatalogRegistry
from datalab.config import Settings, load_settings
from datalab.errors import ConfigError
from datalab.onyxia_context import ContextProject, ContextUser, build_context
from datalab.values import resolve_values

from .catalog.conftest import onyxia_charts_at

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _documented_region() -> dict[str, Any]:
    """The example region of docs/configuration.md ("An Onyxia region's settings")."""
    text = DOCS.read_text()
    block = re.search(r"## An Onyxia region's settings.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/configuration.md has no example region"
    region: dict[str, Any] = yaml.safe_load(block[1])["region"]
    return region


def _context(settings: Settings) -> dict[str, Any]:
    return build_context(
        ContextUser("alice"),
        ContextProject("user-alice", "pw"),
        settings.region.context(),
        rng=random.Random(1),
    )


def test_onyxia_defaults() -> None:
    context = _context(load_settings(None))
    region, k8s = context["region"], context["k8s"]
    assert region["defaultNetworkPolicy"] is False and region["defaultIpProtection"] is False
    assert (region["from"], region["tolerations"], region["nodeSelector"]) == ([], [], {})
    assert region["startupProbe"] is None  # the charts' own probe
    assert region["sliders"] == {}
    assert region["openshiftSCC"] == {"enabled": False, "scc": ""}
    assert k8s["ingressClassName"] == "" and k8s["ingress"] is True and k8s["route"] is False
    assert k8s["istio"] == {"enabled": False, "gateways": []}
    assert (k8s["useCertManager"], k8s["certManagerClusterIssuer"]) == (False, "")
    assert (k8s["initScriptUrl"], k8s["initScriptCheckSum"]) == ("", "")
    assert set(context["packageRepositoryInjection"].values()) == {""}
    assert "disk" not in region["resources"] and "gpu" not in region["resources"]


def test_the_documented_region_reaches_the_context() -> None:
    context = _context(load_settings(None, region=_documented_region()))
    region, k8s = context["region"], context["k8s"]
    assert k8s["ingressClassName"] == "nginx"
    assert (k8s["useCertManager"], k8s["certManagerClusterIssuer"]) == (True, "letsencrypt")
    assert k8s["initScriptUrl"] == "https://inseefrlab.github.io/onyxia/onyxia-init.sh"
    assert region["defaultNetworkPolicy"] is True
    assert region["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert region["tolerations"][0]["key"] == "gpu"
    assert region["nodeSelector"] == {"pool": "interactive"}
    assert region["startupProbe"]["failureThreshold"] == 60
    assert region["resources"]["disk"] == "10Gi" and region["resources"]["gpu"] == "1"
    assert region["sliders"]["cpu"] == {
        "sliderMin": 50,
        "sliderMax": 8000,
        "sliderStep": 50,
        "sliderUnit": "m",
    }
    pypi = context["packageRepositoryInjection"]["pypiProxyUrl"]
    assert pypi == "https://nexus.example.org/pypi/simple"


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ({"default_resources": {"cpu": "2"}}, "unknown key(s) cpu: use cpuRequest"),
        ({"default_resources": {"gpu": "one"}}, "gpu must be a whole number of GPUs"),
        ({"default_resources": {"disk": "ten"}}, "disk"),
        ({"startup_probe": {"delay": 3}}, "unknown key(s) delay: use failureThreshold"),
        ({"sliders": {"cpu": {"sliderMin": 9, "sliderMax": 1}}}, "sliderMin is larger"),
        ({"sliders": {"cpu": {"sliderMax": 1}}}, "region.sliders.cpu.sliderMin"),
        ({"openshift_scc": {"enabled": True, "name": "x"}}, "region.openshift_scc.name"),
    ],
)
def test_bad_region_settings_name_the_key(region: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, region=region)
    assert message in str(info.value)


def test_a_real_onyxia_chart_reads_them(tmp_path: Path) -> None:
    """jupyter-python of helm-charts-interactive-services (skipped without a clone)."""
    charts = onyxia_charts_at(tmp_path / "onyxia")
    registry = CatalogRegistry(
        [CatalogConfig(id="ide", location=str(charts), include=["jupyter-python"])],
        tmp_path / "cache",
    )
    registry.refresh_sync()
    context = _context(load_settings(None, region=_documented_region()))
    values = resolve_values(registry.get_chart("ide", "jupyter-python"), context).values
    assert values["ingress"]["ingressClassName"] == "nginx"
    assert values["ingress"]["useCertManager"] is True
    assert values["ingress"]["certManagerClusterIssuer"] == "letsencrypt"
    assert values["init"]["regionInit"] == "https://inseefrlab.github.io/onyxia/onyxia-init.sh"
    assert values["security"]["networkPolicy"] == {
        "enabled": True,
        "from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
    }
    assert values["tolerations"][0]["effect"] == "NoSchedule"
    assert values["nodeSelector"] == {"pool": "interactive"}
    assert values["startupProbe"]["failureThreshold"] == 60
    assert values["persistence"]["size"] == "10Gi"
    assert values["repository"]["pipRepository"] == "https://nexus.example.org/pypi/simple"
    assert values["openshiftSCC"] == {"enabled": False, "scc": ""}
    cpu = values["resources"]["limits"]["cpu"]
    assert cpu == "4"
