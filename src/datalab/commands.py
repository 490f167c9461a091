"""Equivalent command lines for service actions (Onyxia's "command bar" principle): the
``datalab`` CLI line, and what the same action is on Kubernetes with helm/kubectl, so users learn
the underlying tools. Launch commands come from :func:`datalab.values.equivalent_commands`."""

from __future__ import annotations

import shlex


def project_args(project_id: str) -> list[str]:
    """How every ``datalab`` line names the project it acts in (the CLI's ``--project``)."""
    return ["--project", project_id]


def _project_flag(project_id: str) -> str:
    return " " + shlex.join(project_args(project_id))


def for_action(action: str, service_id: str, project_id: str) -> dict[str, str]:
    sid, ns = shlex.quote(service_id), shlex.quote(project_id)
    verb = {"status": "services show"}.get(action, action)
    datalab = f"datalab {verb} {sid}{_project_flag(project_id)}"
    kubernetes = {
        # Onyxia's convention: charts scale their workloads to 0 when global.suspend is true
        "suspend": f"helm upgrade {sid} --reuse-values --set global.suspend=true -n {ns}",
        "resume": f"helm upgrade {sid} --reuse-values --set global.suspend=false -n {ns}",
        "delete": f"helm uninstall {sid} -n {ns}",
        "logs": f"kubectl logs -n {ns} -l app.kubernetes.io/instance={sid} --all-containers -f",
        "events": f"kubectl get events -n {ns} --field-selector involvedObject.name={sid}",
        "status": f"helm status {sid} -n {ns}",
    }[action]
    return {"datalab": datalab, "kubernetes": kubernetes}


def for_service(service_id: str, project_id: str) -> dict[str, dict[str, str]]:
    return {
        action: for_action(action, service_id, project_id)
        for action in ("status", "logs", "events", "suspend", "resume", "delete")
    }


def for_listing(project_id: str) -> dict[str, str]:
    ns = shlex.quote(project_id)
    return {
        "datalab": f"datalab services{_project_flag(project_id)}",
        "kubernetes": f"helm list -n {ns}",
    }
