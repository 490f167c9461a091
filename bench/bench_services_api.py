"""Listing services through the API as the number of recorded services grows.

The platform runs in-process (httpx ASGI transport, SQLite in a temp dir, the memory backend so
that only the platform's own cost is measured). Target: p99 <= 50 ms with 200 services, flat in N.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from datalab.app import create_app
from datalab.config import load_settings
from datalab.identity import accounts
from datalab.platform import Platform

SIZES = (50, 100, 200, 400)
REQUESTS = 200


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(root: Path) -> dict[str, Any]:
    os.environ["DATALAB_ADMIN_PASSWORD"] = "bench-admin-password"
    settings = load_settings(
        None,
        data_dir=root,
        backend={"name": "memory"},
        region={"user_quota": {"max_services": None, "cpu": None, "memory_mb": None}},
        # the API's own cost: no S3 / Vault credentials minted per launch (bench_storage
        # measures object storage)
        storage={"mode": "disabled"},
        secrets={"mode": "disabled"},
    )
    platform = Platform.create(settings)
    app = create_app(platform)
    await platform.start()
    results: dict[str, Any] = {}
    try:
        with platform.db.session() as session:
            user, _ = accounts.create_user(session, settings.region, "bench", password="x" * 12)
            _, token = accounts.create_token(session, user, "bench", ttl_days=1)
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            created = 0
            for size in SIZES:
                while created < size:
                    response = await http.post(
                        "/api/services",
                        json={"chart": "jupyter-python", "name": f"svc-{created}"},
                        headers=headers,
                    )
                    response.raise_for_status()
                    created += 1
                samples = []
                for _ in range(REQUESTS):
                    started = time.perf_counter()
                    response = await http.get("/api/services", headers=headers)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert len(response.json()["services"]) == size
                results[f"n{size}"] = {
                    "p50_ms": round(statistics.median(samples), 2),
                    "p99_ms": round(_percentile(samples, 0.99), 2),
                }
    finally:
        await platform.stop()
    results["target"] = "p99 <= 50 ms at n200, flat as n grows"
    results["requests_per_size"] = REQUESTS
    return results


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as root:
        return asyncio.run(_measure(Path(root)))
