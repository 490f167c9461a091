"""Flow 2 in a real browser with the real embedded SeaweedFS: upload a Parquet file by drag and
drop, preview its rows, create a share link that downloads it; names are escaped; another user
does not see the files. And the secrets editor on the real embedded OpenBao."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import expect

from .conftest import LiveServer, screenshot, serve, sign_in, signed_in_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def storage_server() -> Iterator[LiveServer]:
    yield from serve(
        {
            "backend": {"name": "memory"},
            "storage": {"mode": "embedded"},
            "secrets": {"mode": "embedded"},
        }
    )


def parquet_bytes() -> bytes:
    table = pa.table({"code": ["62.01Z", "10.71C"], "label": ["Programmation", "Boulangerie"]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def drop_file(page: Any, name: str, data: bytes, mime: str) -> None:
    """Drag and drop a file onto the drop zone, as a user would from their desktop."""
    transfer = page.evaluate_handle(
        """([name, bytes, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
            return transfer;
        }""",
        [name, list(data), mime],
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


def test_upload_preview_share(browser: Any, storage_server: LiveServer) -> None:
    storage_server.add_user("hugo", "hugo-password-1")
    with signed_in_page(browser, storage_server, "gina", "gina-password-1") as page:
        page.get_by_role("link", name="My files", exact=True).click()
        page.get_by_text("This folder is empty.").wait_for()

        page.once("dialog", lambda dialog: dialog.accept("data"))
        page.get_by_role("button", name="New folder").click()
        page.wait_for_url("**prefix=data%2F")

        data = parquet_bytes()
        drop_file(page, "naf.parquet", data, "application/octet-stream")
        page.get_by_role("cell", name="naf.parquet").wait_for()
        evil = "<img src=x onerror=alert(1)>.csv"  # a file name is text, never markup
        page.locator("#upload-input").set_input_files(
            files=[{"name": evil, "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"}]
        )
        page.get_by_role("cell", name=evil).wait_for()
        assert "&lt;img src=x onerror=alert(1)&gt;.csv" in page.content()
        assert page.locator("img[src=x]").count() == 0

        row = page.locator("tr[data-key='data/naf.parquet']")
        row.get_by_role("button", name="Preview").click()
        preview = page.locator("#preview-table")
        expect(preview).to_contain_text("Boulangerie")
        expect(page.locator("#preview-schema")).to_contain_text("code: string")
        screenshot(page, "14-files-preview")

        row.get_by_role("button", name="Share").click()
        page.get_by_label("Link valid for").select_option("86400")
        page.get_by_role("button", name="Create the link").click()
        expect(page.locator("#share-url")).to_have_value(re.compile(r"^http"))
        url = page.locator("#share-url").input_value()
        assert httpx.get(url, timeout=30).content == data  # no credentials needed
        screenshot(page, "15-files-share")

        # the launcher's defaults carry the injected S3 credentials: no secret in the page
        page.goto("/launcher/datalab/jupyter-python")
        expect(page.locator("#cmd-values")).to_contain_text("secretAccessKey: '********'")
        token = storage_server.token("gina", "gina-password-1")
        launch = storage_server.api(
            "POST", "/api/services", token=token, json={"chart": "jupyter-python", "dry_run": True}
        )
        s3 = launch["values"]["s3"]
        assert s3["enabled"] and s3["secretAccessKey"] and s3["sessionToken"]
        html = page.content()
        assert s3["secretAccessKey"] not in html and s3["sessionToken"] not in html

    other = browser.new_context(base_url=storage_server.url)
    page = other.new_page()
    try:
        sign_in(page, storage_server, "hugo", "hugo-password-1")
        page.goto("/files")
        page.get_by_text("This folder is empty.").wait_for()
        assert "naf.parquet" not in page.content()
        page.goto("/files?bucket=user-gina&prefix=data/")
        assert "naf.parquet" not in page.content()
        page.get_by_role("alert").wait_for()
        screenshot(page, "16-files-other-user")
    finally:
        other.close()


def test_secrets_editor(browser: Any, storage_server: LiveServer) -> None:
    with signed_in_page(browser, storage_server, "ines", "ines-password-1") as page:
        page.get_by_role("link", name="Secrets", exact=True).click()
        page.get_by_role("link", name="user-ines/").click()
        page.once("dialog", lambda dialog: dialog.accept("database"))
        page.get_by_role("button", name="New secret").click()
        page.get_by_label("Key 1").fill("DB_PASSWORD")
        page.get_by_label("Value 1").fill("hunter2-secret")
        assert page.get_by_label("Value 1").get_attribute("type") == "password"
        page.get_by_role("button", name="Save").click()
        page.get_by_role("button", name="database").click()
        assert page.get_by_label("Value 1").input_value() == "hunter2-secret"
        assert "hunter2-secret" not in page.content()  # in an input, masked, on demand
        page.get_by_label("Show values").check()
        assert page.get_by_label("Value 1").get_attribute("type") == "text"
        page.get_by_role("button", name="Show as environment variables").click()
        expect(page.locator("#env-text")).to_have_value("export DB_PASSWORD=hunter2-secret\n")
        screenshot(page, "17-secrets")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete").click()
        page.get_by_text("Nothing here yet.").wait_for()

        page.get_by_role("link", name="Account", exact=True).click()
        page.get_by_role("button", name="Show my S3 credentials").click()
        expect(page.locator("[data-s3=AccessKeyId]")).not_to_be_empty()
        expect(page.locator("[data-s3=bucket]")).to_have_text("user-ines")
