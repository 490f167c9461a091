"""The web UI with ``backend.name: kubernetes`` in Chromium, on the real control plane
(tests/kube/testenv.py): a user launches JupyterLab from the catalog, sees it running, suspends,
resumes and deletes it; each step is the Helm release the launcher's command bar printed.
(kwok's pods run no containers: opening the notebook is the local backend's browser test.)"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
from playwright.sync_api import expect
from tests.kube.testenv import KubeCluster

from .conftest import LiveServer, screenshot, serve, signed_in_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_server(kube_cluster: KubeCluster) -> Iterator[LiveServer]:
    yield from serve(
        {
            "backend": {
                "name": "kubernetes",
                "kubernetes": {
                    "kubeconfig": str(kube_cluster.kubeconfig),
                    "ingress_namespace": None,
                },
            }
        }
    )


def test_jupyterlab_launched_from_the_ui_is_a_helm_release(
    browser: Any, cluster_server: LiveServer, kube_cluster: KubeCluster
) -> None:
    releases = helm_python.Config(kubeconfig_path=kube_cluster.kubeconfig, namespace="user-rita")
    with signed_in_page(browser, cluster_server, "rita", "rita-password-1") as page:
        page.get_by_role("link", name="Catalog", exact=True).first.click()
        page.get_by_role("link", name="Launch jupyter-python").click()
        page.get_by_role("tab", name=re.compile("persistence", re.I)).click()
        page.locator("#f-persistence-enabled").uncheck()  # no volume provisioner here
        page.get_by_label("Service id (optional)").fill("nb")
        expect(page.locator("#cmd-helm")).to_contain_text("helm upgrade --install nb ")
        expect(page.locator("#cmd-helm")).to_contain_text("--namespace user-rita")
        helm_line = shlex.split(page.locator("#cmd-helm").text_content().split(" && ")[-1])
        printed_values = page.locator("#cmd-values").text_content()
        assert "enabled: false" in printed_values
        page.get_by_role("button", name="Launch", exact=True).click()

        card = page.locator("#svc-nb")
        card.get_by_text("Running", exact=True).wait_for(timeout=60_000)
        screenshot(page, "40-kubernetes-running")
        # what ran is what the command bar said: that release, chart and version, namespace
        [release] = releases.list()
        assert helm_line[3] == release["name"] == "nb"
        assert helm_line[4].endswith("/catalog/jupyter-python")  # the catalog's chart itself
        metadata = releases.get_metadata("nb")
        assert helm_line[helm_line.index("--version") + 1] == metadata["version"]
        assert releases.get_values("nb")["persistence"]["enabled"] is False

        card.get_by_role("button", name="Suspend").click()
        card.get_by_text("Suspended", exact=True).wait_for()
        assert releases.get_values("nb")["global"]["suspend"] is True
        card.get_by_role("button", name="Resume").click()
        card.get_by_text("Running", exact=True).wait_for(timeout=60_000)
        page.once("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Delete").click()
        card.wait_for(state="detached")
        assert releases.list() == []
