"""The whole chain with real parts: the prediction API (a real server process) answers replayed
descriptions, ships its log to SeaweedFS, the compaction turns it into Parquet, the metrics count
every prediction, the drift tests flag a drifted window and not an i.i.d. one, and the dashboard
shows each page in Chromium (screenshots in test-artifacts/screenshots/monitor-*.png)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from autocode.monitor import report

from ..conftest import free_port

if TYPE_CHECKING:
    from autocode.train import TrainResult

# the whole chain (API, SeaweedFS, compaction, dashboard in Chromium): 150-240 s on a busy
# 2-core machine, more than the suite's 300 s default allows for with margin
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"


def autocode(
    *args: str, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "autocode.cli", *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check and done.returncode not in (0,):
        raise AssertionError(f"autocode {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def window(start: datetime, end: datetime) -> str:
    """Whole seconds around [start, end], naive UTC (as the CLI and the dashboard's links take)."""
    low = start.replace(microsecond=0)
    high = end.replace(microsecond=0) + timedelta(seconds=1)
    return f"{low:%Y-%m-%dT%H:%M:%S}..{high:%Y-%m-%dT%H:%M:%S}"


@pytest.fixture
def api(
    small_model: TrainResult, seaweedfs: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, Any]]:
    from autocode.serve.auth import KeysFile

    _, key = KeysFile(tmp_path / "keys.json").add("replay")
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    s3 = {k: v for k, v in seaweedfs.items() if k != "bucket"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTOCODE_")}
    env = {**base, **s3}
    server_env = {
        **env,
        "AUTOCODE_API_API_KEYS_FILE": str(tmp_path / "keys.json"),
        "AUTOCODE_API_LOG_S3_URI": f"s3://{seaweedfs['bucket']}/{prefix}/predictions",
        "AUTOCODE_API_LOG_SEGMENT_MAX_AGE_S": "0.5",
        "AUTOCODE_API_LOG_SHIP_INTERVAL_S": "0.2",
    }
    port = free_port()
    log = tmp_path / "api.log"
    command = [
        sys.executable, "-m", "autocode.serve", "--host", "127.0.0.1", "--port", str(port),
        "--model", str(small_model.output), "--log-dir", str(tmp_path / "spool"),
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=server_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", process, log)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "key": key,
            "env": env,
            "log": f"s3://{seaweedfs['bucket']}/{prefix}/predictions",
            "data": f"s3://{seaweedfs['bucket']}/{prefix}/predictions-parquet",
            "process": process,
        }
    finally:
        stop(process)


def replay(api: dict[str, Any], *options: str) -> tuple[dict[str, Any], datetime, datetime]:
    started = datetime.now(UTC)
    done = autocode(
        "monitor", "replay", "--api", api["url"], "--api-key", api["key"], "--rate", "40",
        "--count", "150", "--batch", "4", "--json", *options, env=api["env"],
    )  # fmt: skip
    ended = datetime.now(UTC)
    time.sleep(1.2)  # the next phase starts in another second: windows never overlap
    return json.loads(done.stdout), started, ended


def s3_record_count(api: dict[str, Any]) -> int:
    from autocode.monitor.storage import S3Store

    env = api["env"]
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    store = S3Store(api["log"], client)
    return sum(store.read(e.key).count(b"\n") for e in store.list())


def test_replayed_traffic_reaches_the_metrics_drift_and_dashboard(
    api, nomenclatures_dir, tmp_path
) -> None:
    env = api["env"]
    first, a_start, a_end = replay(api, "--seed", "1")
    second, b_start, b_end = replay(api, "--seed", "2")
    # the drift: five times as many restaurants, bars and hotels (section I) as usual
    drifted, c_start, c_end = replay(
        api, "--seed", "3", "--drift-sections", "I", "--drift-factor", "20"
    )
    for phase in (first, second, drifted):
        assert phase["failures"] == 0 and phase["predictions"] == 600, phase
    answered = 1800

    deadline = time.monotonic() + 60  # segments are sealed after 0.5 s and shipped every 0.2 s
    while s3_record_count(api) < answered:
        assert time.monotonic() < deadline, f"only {s3_record_count(api)} records in S3"
        time.sleep(0.5)

    compacted = json.loads(
        autocode(
            "logs", "compact", "--source", api["log"], "--output", api["data"], "--json", env=env
        ).stdout
    )
    assert compacted["new_rows"] == answered and compacted["rejected"] == 0
    again = json.loads(
        autocode(
            "logs", "compact", "--source", api["log"], "--output", api["data"], "--json", env=env
        ).stdout
    )
    assert again["new_rows"] == 0

    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    everything = window(a_start, c_end)
    metrics = json.loads(
        autocode("monitor", "metrics", "--data", api["data"], "--window", everything, "--json",
                 env={**env, **cache}).stdout
    )  # fmt: skip
    assert metrics["summary"]["predictions"] == answered
    assert metrics["summary"]["requests"] == 450
    [model] = metrics["models"]
    assert model["predictions"] == answered and model["model_version"].startswith("local-")
    auto = (first["automatic"] + second["automatic"] + drifted["automatic"]) / answered
    assert metrics["summary"]["auto_rate"] == pytest.approx(auto)

    def drift(current: str, reference: str) -> tuple[int, dict[str, Any]]:
        done = autocode(
            "monitor", "drift", "--data", api["data"], "--window", current,
            "--reference", reference, "--nomenclatures", str(nomenclatures_dir), "--json",
            env={**env, **cache}, check=False,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)

    code, iid = drift(window(b_start, b_end), window(a_start, a_end))
    assert (code, iid["drift"]) == (0, False), iid["message"]
    assert iid["current"]["predictions"] == iid["reference"]["predictions"] == 600
    code, shifted = drift(window(c_start, c_end), window(a_start, a_end))
    assert (code, shifted["drift"]) == (1, True), shifted["message"]
    assert any(t["flagged"] and t["variable"].startswith("codes:") for t in shifted["tests"])

    # the dashboard, as the catalog runs it (gunicorn), read in Chromium
    port = free_port()
    log = tmp_path / "dashboard.log"
    dashboard_env = {
        **env,
        "AUTOCODE_MONITOR_DATA": api["data"],
        "AUTOCODE_MONITOR_CACHE": str(tmp_path / "dashboard-cache"),
        "AUTOCODE_NOMENCLATURES": str(nomenclatures_dir),
    }
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
        "--threads", "4", "--no-control-socket", "autocode.monitor.dashboard:create_server()",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=dashboard_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", process, log)
        metrics_text = httpx.get(f"{url}/metrics", timeout=60).text
        assert 'autocode_monitor_alert{name="drift"}' in metrics_text
        shown = browse(url, window(c_start, c_end), window(a_start, a_end), "drifted")
        assert shown["drift"].startswith("drift:"), shown["drift"]
        assert shown["volume"] == "600"  # predictions in the current window
        shown = browse(url, window(b_start, b_end), window(a_start, a_end), "iid", pages=["drift"])
        assert shown["drift"].startswith("no drift"), shown["drift"]
    finally:
        stop(process)
    assert "Traceback" not in log.read_text()


def browse(
    url: str, current: str, reference: str, name: str, pages: list[str] | None = None
) -> dict[str, str]:
    """Open each page with these windows in Chromium; screenshot it; return what it says."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        for key in pages or list(report.PAGES):
            page.goto(f"{url}/{key}?current={current}&reference={reference}")
            page.wait_for_selector(f"#page-{key}", timeout=60_000)
            if key != "uncertain":
                drawn = f"#page-{key} .js-plotly-plot, #page-{key} .dash-table-container"
                page.wait_for_selector(drawn, timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(SCREENSHOTS / f"monitor-{name}-{key}.png"), full_page=True)
            if key == "drift":
                seen[key] = page.locator("#fact-message").inner_text()
            if key == "volume":
                seen[key] = page.locator("#fact-predictions").inner_text()
        browser.close()
    assert not errors, errors
    return seen
