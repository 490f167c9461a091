"""A release's phase from its pods and events, as the API reports them (JSON)."""

from __future__ import annotations

from typing import Any

from datalab.backends.base import Phase
from datalab.backends.kubernetes.status import release_phase


def pod(phase: str = "Running", ready: bool = True, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    conditions += status.pop("conditions", [])
    return {
        "metadata": {"name": "p"},
        "status": {"phase": phase, "conditions": conditions, **status},
    }


def waiting(reason: str, message: str = "", image: str = "img:1") -> dict[str, Any]:
    return {
        "name": "main",
        "image": image,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def test_running_when_every_pod_is_ready() -> None:
    assert release_phase([pod(), pod()]) == (Phase.RUNNING, None)
    phase, reason = release_phase([pod(), pod(ready=False)])
    assert phase is Phase.STARTING and reason == "waiting until ready (1 of 2 pods ready)"


def test_reasons_users_can_act_on() -> None:
    phase, reason = release_phase(
        [pod("Pending", False, containerStatuses=[waiting("ImagePullBackOff", "not found", "x:9")])]
    )
    assert reason is not None
    assert (
        phase is Phase.FAILED and "'x:9' cannot be pulled (ImagePullBackOff): not found" in reason
    )
    crash = waiting(CRASH := "CrashLoopBackOff")
    crash["lastState"] = {"terminated": {"exitCode": 3, "reason": "Error"}}
    phase, reason = release_phase([pod("Running", False, containerStatuses=[crash])])
    assert reason is not None
    assert phase is Phase.FAILED and f"{CRASH}: exit code 3, Error" in reason
    unscheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 Insufficient cpu.",
    }
    phase, reason = release_phase([pod("Pending", False, conditions=[unscheduled])])
    assert phase is Phase.STARTING
    assert reason == "cannot be scheduled yet: 0/2 nodes are available: 2 Insufficient cpu."


def test_quota_refusal_and_release_failure() -> None:
    refused = {
        "reason": "FailedCreate",
        "message": 'pods "x" is forbidden: exceeded quota: datalab-quota, requested: '
        "limits.cpu=4, used: limits.cpu=6, limited: limits.cpu=8",
        "lastTimestamp": "2026-12-04T10:00:00Z",
    }
    phase, reason = release_phase([], [refused])
    assert reason is not None
    assert phase is Phase.FAILED and reason.startswith("the project's quota refused its pods")
    assert release_phase([], [])[0] is Phase.STARTING
    phase, reason = release_phase([pod()], release_failure="timed out waiting")
    assert phase is Phase.FAILED and reason == "the release failed: timed out waiting"
    assert release_phase([pod()], suspended=True)[0] is Phase.SUSPENDED
