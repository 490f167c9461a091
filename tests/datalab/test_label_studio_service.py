"""The shipped `label-studio` chart launched through the API on the real local backend, with
the real embedded object storage, and used as its users use it: through the platform's
``/s/<id>/`` with a platform token, Label Studio's own API key beside it (``X-Api-Key``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from datalab.db import Project
from datalab.platform import Platform

from .conftest import Api, served_local_platform, wait_for_phase

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def platform_url() -> AsyncIterator[tuple[Platform, httpx.AsyncClient, Api]]:
    # its environment is kept, and shared with the browser test
    async with served_local_platform("dl-labelstudio-") as served:
        yield served.platform, served.http, served.alice


@pytest.mark.timeout(1200)  # a cold start: the environment, then the migrations (minutes)
async def test_label_studio_answers_its_api_through_the_platform(
    platform_url: tuple[Platform, httpx.AsyncClient, Api],
) -> None:
    platform, http, alice = platform_url
    await alice.call(
        "POST",
        "/api/services",
        json={"catalog": "datalab", "chart": "label-studio", "name": "ls"},
    )
    await wait_for_phase(alice, "ls", "running", timeout=1200)
    details = await alice.call("GET", "/api/services/ls")
    values = details["values"]
    with platform.db.session() as session:
        project = session.get(Project, "user-alice")
        assert project is not None
        project_password = project.service_password
    assert values["labelStudio"]["username"] == "alice@localhost"
    assert values["security"]["password"] == project_password == details["password"]
    token = values["security"]["apiToken"]
    assert len(token) >= 8 and token in details["notes"]  # the user can get the API token

    base = "/s/ls"
    platform_auth = alice.headers()
    # the platform checks its token, then Label Studio its own key
    health = await http.get(f"{base}/health", headers=platform_auth)
    assert health.status_code == 200 and health.json() == {"status": "UP"}
    assert (await http.get(f"{base}/api/projects/", headers=platform_auth)).status_code == 401
    wrong = {**platform_auth, "X-Api-Key": "not-the-token"}
    assert (await http.get(f"{base}/api/projects/", headers=wrong)).status_code == 401
    no_platform = await http.get(f"{base}/api/projects/", headers={"X-Api-Key": token})
    assert no_platform.status_code == 307  # to the service's origin: never without the platform

    auth = {**platform_auth, "X-Api-Key": token}
    me = await http.get(f"{base}/api/current-user/whoami", headers=auth)
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "alice@localhost"
    created = await http.post(
        f"{base}/api/projects/",
        headers=auth,
        json={"title": "through the platform", "label_config": "<View></View>"},
    )
    assert created.status_code == 201, created.text
    listed = (await http.get(f"{base}/api/projects/", headers=auth)).json()
    assert [p["title"] for p in listed["results"]] == ["through the platform"]

    # SQLite in the service's work directory; the user's S3 session in its environment
    workdir = platform.settings.data_dir / "services" / "ls" / "work"
    assert (workdir / "data" / "label_studio.sqlite3").is_file()
    pid = platform.backend.get_state("ls")["pid"]
    environ = psutil.Process(pid).environ()
    s3 = values["s3"]
    assert s3["enabled"] and environ["AWS_ENDPOINT_URL"] == s3["url"] != ""
    if s3["credentialsUrl"]:  # renewed by the platform (the AWS SDKs' container provider)
        assert environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == s3["credentialsUrl"]
        assert environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == s3["credentialsAuthorization"]
        assert "AWS_ACCESS_KEY_ID" not in environ
    else:
        assert environ["AWS_ACCESS_KEY_ID"] == s3["accessKeyId"] != ""
    assert environ["LABEL_STUDIO_PASSWORD"] == project_password
    # listening on a Unix socket only the platform can enter
    endpoint = await platform.backend.endpoint("ls")
    assert endpoint is not None and endpoint.socket is not None
    assert (Path(endpoint.socket).parent.stat().st_mode & 0o777) == 0o700

    await alice.call("DELETE", "/api/services/ls", expect=200)
