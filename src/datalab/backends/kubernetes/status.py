"""A release's phase, from what the cluster says of its pods and events (pure; the objects are
the API's JSON, as the watches cache them), with reasons users can act on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from datalab.backends.base import Phase

#: container states that will not get better by waiting: the user must change something
IMAGE_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
CRASHING = "CrashLoopBackOff"
#: events on the release's controllers that stop pods from being created
CREATION_REFUSED = frozenset({"FailedCreate"})


def release_phase(
    pods: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]] = (),
    *,
    suspended: bool = False,
    release_failure: str | None = None,
) -> tuple[Phase, str | None]:
    """The phase of a release and why (None when nothing needs saying)."""
    if release_failure:
        return Phase.FAILED, f"the release failed: {release_failure}"
    if suspended:
        return Phase.SUSPENDED, "suspended (its workloads scaled to zero); resume it to start it"
    pods = list(pods)
    for pod in pods:
        for status in _container_statuses(pod):
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason, message = waiting.get("reason"), waiting.get("message") or ""
            if reason in IMAGE_PROBLEMS:
                image = status.get("image", "")
                return Phase.FAILED, f"the image {image!r} cannot be pulled ({reason}): {message}"
            if reason == CRASHING:
                return Phase.FAILED, _crash(status)
    refused = [e for e in events if e.get("reason") in CREATION_REFUSED]
    if refused and not pods:
        latest = max(refused, key=lambda e: str(e.get("lastTimestamp") or ""))
        message = str(latest.get("message", ""))
        if "exceeded quota" in message:
            return Phase.FAILED, f"the project's quota refused its pods: {message}"
        return Phase.FAILED, f"its pods cannot be created: {message}"
    if not pods:
        return Phase.STARTING, "waiting for its pods to be created"
    for pod in pods:
        unschedulable = _condition(pod, "PodScheduled")
        if unschedulable and unschedulable.get("reason") == "Unschedulable":
            return Phase.STARTING, f"cannot be scheduled yet: {unschedulable.get('message', '')}"
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    ready = [p for p in running if (_condition(p, "Ready") or {}).get("status") == "True"]
    if len(ready) == len(pods):
        return Phase.RUNNING, None
    return Phase.STARTING, f"waiting until ready ({len(ready)} of {len(pods)} pods ready)"


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _crash(status: Mapping[str, Any]) -> str:
    last = (status.get("lastState") or {}).get("terminated") or {}
    detail = f"exit code {last['exitCode']}" if "exitCode" in last else "it keeps exiting"
    if last.get("reason"):
        detail += f", {last['reason']}"
    return (
        f"the container {status.get('name', '')!r} keeps crashing ({CRASHING}: {detail}); "
        "its logs say why"
    )
