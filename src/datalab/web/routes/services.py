"""My services: cards with live status (an htmx fragment polled every few seconds), quota
gauges, and the events fragment. Actions (suspend, resume, rename, share, delete, logs, password)
are calls from the browser to the JSON API (static/services.js)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from datalab.answers import QuotaOut, ServiceDetail
from datalab.errors import DatalabError, NotFound
from datalab.web.context import PageDep

router = APIRouter(include_in_schema=False)

#: htmx stops polling when a fragment answers 286
STOP_POLLING = 286


def _running_hours(service: ServiceDetail) -> float | None:
    started = service.started_at
    if service.phase != "running" or not started:
        return None
    return (datetime.now(UTC) - datetime.fromisoformat(started)).total_seconds() / 3600


def _gauges(quota: QuotaOut) -> list[dict[str, Any]]:
    usage, limits = quota.usage, quota.limits
    return [
        {"key": key, "used": getattr(usage, key), "limit": getattr(limits, limit_key), "unit": unit}
        for key, limit_key, unit in (
            ("services", "max_services", ""),
            ("cpu", "cpu", "quota.cores"),
            ("memory_mb", "memory_mb", "quota.mib"),
        )
    ]


@router.get("/services")
async def services_page(page: PageDep) -> Response:
    principal = page.require()
    manager = page.platform.services
    return page.render(
        "services.html",
        services=await manager.list(principal),
        gauges=_gauges(manager.quota(principal)),
        personal=principal.project_id == next((p.id for p in page.projects if p.personal), ""),
    )


@router.get("/ui/quota")
def quota_fragment(page: PageDep) -> Response:
    """The quota gauges, polled by My services (launches and suspensions elsewhere count)."""
    principal = page.require()
    return page.render("_quota.html", gauges=_gauges(page.platform.services.quota(principal)))


@router.get("/ui/services/{service_id}/status")
async def service_status(page: PageDep, service_id: str) -> Response:
    principal = page.require()
    try:
        service = await page.platform.services.get(principal, service_id)
    except NotFound:
        return page.render("_message.html", status=STOP_POLLING, message=page.t("services.gone"))
    except DatalabError as exc:
        return page.render("_message.html", message=page.message(exc))
    hours = _running_hours(service)
    threshold = page.branding.long_running_warning_h
    return page.render(
        "_service_status.html",
        service=service,
        running_hours=hours,
        long_running=hours is not None and hours > threshold,
        threshold=threshold,
    )


@router.get("/ui/services/{service_id}/events")
async def service_events(page: PageDep, service_id: str) -> Response:
    principal = page.require()
    try:
        events = await page.platform.services.events(principal, service_id)
    except DatalabError as exc:
        return page.render("_message.html", status=exc.status, message=page.message(exc))
    return page.render("_events.html", events=events)
