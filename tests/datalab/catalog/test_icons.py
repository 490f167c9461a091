"""Chart icons the platform serves itself: the chart's own file, a relative ``icon:`` path, or a
remote icon downloaded at load when the catalog allows it (else none: the page shows initials)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx
import pytest
import yaml

from datalab.catalog import CatalogConfig, CatalogRegistry
from datalab.catalog.icons import MAX_ICON_BYTES, IconCache, local_icon, sniff

from .conftest import ChartWriter

ROOT = Path(__file__).resolve().parents[3]

SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"/>\n'


def png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def chart_yaml(name: str, icon: str | None) -> str:
    meta = {"apiVersion": "v2", "name": name, "version": "1.0.0"}
    return yaml.safe_dump(meta | ({"icon": icon} if icon else {}))


def test_sniff_recognises_images_by_content() -> None:
    assert sniff(png()) == ".png"
    assert sniff(SVG) == ".svg"
    assert sniff(b"\xef\xbb\xbf  <!-- logo -->\n<!DOCTYPE svg>\n<svg width='1'>") == ".svg"
    assert sniff(b"\xff\xd8\xff\xe0rest") == ".jpg"
    assert sniff(b"GIF89a...") == ".gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ".webp"
    assert sniff(b"<html><body><svg></svg></body></html>") is None
    assert sniff(b"#!/bin/sh\n") is None and sniff(b"") is None


def test_local_icons(tmp_path: Path) -> None:
    chart = tmp_path / "c"
    (chart / "assets").mkdir(parents=True)
    assert local_icon(chart, None) is None
    (chart / "assets" / "logo.png").write_bytes(png())
    assert local_icon(chart, "assets/logo.png") == (chart / "assets" / "logo.png").resolve()
    (chart / "icon.svg").write_bytes(SVG)  # the chart's icon.svg comes first
    assert local_icon(chart, "assets/logo.png") == (chart / "icon.svg").resolve()
    (chart / "icon.svg").unlink()
    # nothing outside the chart, nothing that is not an image, nothing too large
    (tmp_path / "secret.svg").write_bytes(SVG)
    assert local_icon(chart, "../secret.svg") is None
    (chart / "assets" / "link.svg").symlink_to(tmp_path / "secret.svg")
    assert local_icon(chart, "assets/link.svg") is None
    assert local_icon(chart, str(tmp_path / "secret.svg")) is None
    (chart / "assets" / "script.svg").write_text("<html><script>alert(1)</script></html>")
    assert local_icon(chart, "assets/script.svg") is None
    (chart / "assets" / "big.svg").write_bytes(SVG + b" " * MAX_ICON_BYTES)
    assert local_icon(chart, "assets/big.svg") is None
    assert local_icon(chart, "https://example.org/logo.svg") is None


def test_shipped_charts_ship_their_icons() -> None:
    registry = CatalogRegistry(
        [CatalogConfig(id="datalab", location=str(ROOT / "catalog"))], Path("/nonexistent")
    )
    registry.refresh_sync()
    for name in ("jupyter-python", "mlflow", "autocode-api", "autocode-monitor"):
        chart = registry.get_chart("datalab", name)
        assert chart.icon_path == (ROOT / "catalog" / name / "icon.svg").resolve(), name
        assert chart.summary()["has_icon"] is True


def test_remote_icons_are_downloaded_only_when_the_catalog_allows_it(
    chart_writer: ChartWriter, http_root: tuple[str, Path], tmp_path: Path
) -> None:
    url, served = http_root
    (served / "logo.png").write_bytes(png())
    (served / "page.html").write_text("<html>not an image</html>")
    chart_writer("remote", chart_yaml=chart_yaml("remote", f"{url}/logo.png"))
    chart_writer("not-image", chart_yaml=chart_yaml("not-image", f"{url}/page.html"))
    chart_writer("missing", chart_yaml=chart_yaml("missing", f"{url}/gone.png"))
    chart_writer("none", chart_yaml=chart_yaml("none", None))
    root = chart_writer.root

    closed = CatalogRegistry([CatalogConfig(id="c", location=str(root))], tmp_path / "closed")
    closed.refresh_sync()
    assert closed.get_chart("c", "remote").icon_path is None  # never fetched
    assert not (tmp_path / "closed" / "icons").exists()

    registry = CatalogRegistry(
        [CatalogConfig(id="c", location=str(root), fetch_icons=True)], tmp_path / "cache"
    )
    registry.refresh_sync()
    icon = registry.get_chart("c", "remote").icon_path
    assert icon is not None and icon.parent == tmp_path / "cache" / "icons"
    assert icon.suffix == ".png" and icon.read_bytes() == png()
    for name in ("not-image", "missing", "none"):
        assert registry.get_chart("c", name).icon_path is None, name
    # the download is kept: a later refresh (or restart) serves it while the server is gone
    (served / "logo.png").unlink()
    again = CatalogRegistry(
        [CatalogConfig(id="c", location=str(root), fetch_icons=True)], tmp_path / "cache"
    )
    again.refresh_sync()
    assert again.get_chart("c", "remote").icon_path == icon


def test_unreachable_icon_hosts_cost_one_attempt(tmp_path: Path) -> None:
    cache = IconCache(tmp_path)
    unreachable: set[str] = set()
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        raise httpx.ConnectError("no route to host", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        assert cache.fetch("https://icons.example.org/a.svg", http, unreachable) is None
        assert cache.fetch("https://icons.example.org/b.svg", http, unreachable) is None
        assert unreachable == {"icons.example.org"} and len(calls) == 1
        # a failed URL is not tried again at the next refresh either (for an hour)
        assert cache.fetch("https://icons.example.org/a.svg", http, set()) is None
        assert len(calls) == 1


def test_oversized_remote_icons_are_refused(tmp_path: Path) -> None:
    def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=SVG + b" " * MAX_ICON_BYTES)

    with httpx.Client(transport=httpx.MockTransport(huge)) as http:
        assert IconCache(tmp_path).fetch("https://example.org/huge.svg", http, set()) is None
    assert not (tmp_path / "icons").exists()


@pytest.mark.parametrize("icon", ["icon.svg", "assets/logo.svg"])
def test_icon_files_are_part_of_the_chart(chart_writer: ChartWriter, icon: str) -> None:
    path = chart_writer("own", chart_yaml=chart_yaml("own", None if icon == "icon.svg" else icon))
    (path / icon).parent.mkdir(parents=True, exist_ok=True)
    (path / icon).write_bytes(SVG)
    registry = CatalogRegistry(
        [CatalogConfig(id="c", location=str(chart_writer.root))],
        path.parent.parent / "cache",
    )
    registry.refresh_sync()
    assert registry.get_chart("c", "own").icon_path == (path / icon).resolve()
