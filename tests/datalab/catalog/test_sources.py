"""Catalog sources: chart directories and Helm repositories (file:// and http://), filters,
malformed charts listed as broken, safe unpacking of archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import subprocess
import sys
import tarfile
import threading
from functools import partial
from pathlib import Path

import helm_python
import httpx
import pytest
import yaml
from tests.datalab.catalog.conftest import ChartWriter, write_chart

from datalab.catalog import (
    Catalog,
    CatalogConfig,
    ChartInvalid,
    HelmSource,
    helm_check,
    load_catalog_file,
    load_chart_dir,
)
from datalab.catalog.config import CatalogError
from datalab.catalog.repository import extract_chart_archive
from datalab.catalog.sources import load_catalog
from datalab.catalog.versions import version_key


def _load(config: CatalogConfig, cache: Path):
    with httpx.Client() as http:
        return load_catalog(config, cache, http)


def test_directory_catalog_lists_charts_highlighted_first(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    for name in ["zeta", "alpha", "mlflow", "jupyter"]:
        chart_writer(name)
    (chart_writer.root / "schemas").mkdir()  # not a chart: ignored, not reported
    (chart_writer.root / "notes.txt").write_text("not a chart either")
    config = CatalogConfig(
        id="lab", location=str(chart_writer.root), highlighted=["mlflow", "jupyter", "absent"]
    )
    catalog = _load(config, tmp_path / "cache")
    assert catalog.chart_names() == ["mlflow", "jupyter", "alpha", "zeta"]
    assert catalog.highlighted == ["mlflow", "jupyter"]
    assert catalog.broken == ()
    chart = catalog.latest("alpha")
    assert (chart.name, chart.version, chart.description) == ("alpha", "1.0.0", "alpha chart")
    assert chart.catalog_id == "lab" and len(chart.digest) == 64
    listing = catalog.to_json()
    assert listing["type"] == "directory"
    assert [c["name"] for c in listing["charts"]] == ["mlflow", "jupyter", "alpha", "zeta"]


def test_include_exclude_globs(chart_writer: ChartWriter, tmp_path: Path) -> None:
    for name in ["jupyter-python", "jupyter-r", "vscode-python", "mlflow"]:
        chart_writer(name)
    config = CatalogConfig(
        id="lab", location=f"file://{chart_writer.root}", include=["jupyter-*", "mlflow"],
        exclude=["*-r"],
    )  # fmt: skip
    assert _load(config, tmp_path).chart_names() == ["jupyter-python", "mlflow"]


def test_several_versions_in_one_directory(chart_writer: ChartWriter, tmp_path: Path) -> None:
    chart_writer("app", version="1.2.0", directory="app-1.2.0")
    chart_writer("app", version="1.10.0", directory="app-1.10.0")
    chart_writer("app", version="1.10.0-rc.1", directory="app-1.10.0-rc1")
    chart_writer("app", version="1.2.0", directory="app-copy")
    catalog = _load(CatalogConfig(id="lab", location=str(chart_writer.root)), tmp_path)
    assert [c.version for c in catalog.charts["app"]] == ["1.10.0", "1.10.0-rc.1", "1.2.0"]
    assert catalog.versions["app"] == ("1.10.0", "1.10.0-rc.1", "1.2.0")
    assert [b.reason.split(" (")[0] for b in catalog.broken] == ["duplicate version 1.2.0"]
    assert version_key("2.0.0") > version_key("2.0.0-beta.2") > version_key("2.0.0-beta.1")
    assert version_key("not-semver") < version_key("0.0.1")


BROKEN_CASES = {
    "no-chart-yaml": "missing Chart.yaml",
    "bad-chart-yaml": "Chart.yaml is not valid YAML",
    "no-version": "Chart.yaml has no 'version'",
    "bad-name": "'name' must be a lowercase chart name",
    "bad-values": "values.yaml is not valid YAML",
    "list-values": "values.yaml must be a mapping",
    "bad-json-schema": "values.schema.json is not valid JSON",
    "invalid-schema": "values.schema.json is not a valid JSON schema",
    "bad-template": "broken template",
    "bad-semver": "Helm cannot load it",
    "bad-local-yaml": "invalid local.yaml",
}


def _write_broken_charts(writer: ChartWriter) -> None:
    root = writer.root
    (root / "no-chart-yaml" / "templates").mkdir(parents=True)
    (root / "no-chart-yaml" / "values.yaml").write_text("a: 1\n")
    writer("bad-chart-yaml", chart_yaml="name: [unclosed\n")
    writer("no-version", chart_yaml="apiVersion: v2\nname: no-version\n")
    writer("bad-name", chart_yaml="apiVersion: v2\nname: Bad_Name!\nversion: 1.0.0\n")
    path = writer("bad-values")
    (path / "values.yaml").write_text("a: [1, 2\n")
    path = writer("list-values")
    (path / "values.yaml").write_text("- a\n- b\n")
    path = writer("bad-json-schema")
    (path / "values.schema.json").write_text("{not json")
    writer("invalid-schema", schema={"type": "object", "properties": {"a": {"type": 12}}})
    writer("bad-template", templates={"x.yaml": "{{ .Values.a | nosuchfunction }}"})
    writer("bad-semver", version="first")
    writer("bad-local-yaml", local={"command": "not-a-list", "surprise": 1})
    writer("good")


def test_malformed_charts_are_listed_as_broken_with_reasons(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    _write_broken_charts(chart_writer)
    catalog = _load(CatalogConfig(id="lab", location=str(chart_writer.root)), tmp_path)
    assert catalog.chart_names() == ["good"]
    reasons = {b.name: b.reason for b in catalog.broken}
    assert set(reasons) == set(BROKEN_CASES)
    for name, expected in BROKEN_CASES.items():
        assert expected in reasons[name], (name, reasons[name])
    assert "nosuchfunction" in reasons["bad-template"]
    assert "command" in reasons["bad-local-yaml"] and "surprise" in reasons["bad-local-yaml"]


def test_template_execution_errors_do_not_break_a_chart(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    # values the platform injects at launch may be missing from values.yaml: not a load error
    chart_writer("needs-values", templates={"x.yaml": '{{ required "host needed" .Values.host }}'})
    catalog = _load(CatalogConfig(id="lab", location=str(chart_writer.root)), tmp_path)
    assert catalog.chart_names() == ["needs-values"]


def test_missing_directory_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="is not a directory"):
        _load(CatalogConfig(id="lab", location=str(tmp_path / "nope")), tmp_path)


# ----------------------------------------------------------------------------------- helm repos


def make_helm_repo(chart_writer: ChartWriter, repo: Path, versions: list[str]) -> Path:
    """Package real charts with Helm's SDK and index them, as `helm package` + `helm repo index`."""
    repo.mkdir(parents=True, exist_ok=True)
    for version in versions:
        path = chart_writer(
            "app", version=version, directory=f"src-app-{version}", local={"command": ["app"]}
        )
        helm_python.package(path, destination=repo)
    helm_python.package(
        chart_writer("tool", version="0.1.0", directory="src-tool"), destination=repo
    )
    helm_python.repo_index_generate(repo)
    return repo


def test_helm_repository_over_file_url(chart_writer: ChartWriter, tmp_path: Path) -> None:
    repo = make_helm_repo(chart_writer, tmp_path / "repo", ["1.0.0", "1.1.0"])
    config = CatalogConfig(id="helm", location=repo.as_uri(), exclude=["tool"])
    assert config.resolved_type() == "helm"
    catalog = _load(config, tmp_path / "cache")
    assert catalog.chart_names() == ["app"]
    latest = catalog.latest("app")
    assert latest.version == "1.1.0" and latest.versions == ("1.1.0", "1.0.0")
    assert latest.local_recipe == {"command": ["app"]}
    assert latest.path.is_relative_to(tmp_path / "cache" / "helm")
    assert (latest.path / "Chart.yaml").is_file()
    # older versions on demand; every entry is there for dependencies, excluded ones too
    assert set(catalog.index) == {("app", "1.0.0"), ("app", "1.1.0"), ("tool", "0.1.0")}


def test_helm_repository_detected_from_its_index_file(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    repo = make_helm_repo(chart_writer, tmp_path / "repo", ["1.0.0"])
    for location in [(repo / "index.yaml").as_uri(), str(repo / "index.yaml")]:
        config = CatalogConfig(id="helm", location=location)
        assert config.resolved_type() == "helm"
        assert _load(config, tmp_path / "cache").chart_names() == ["app", "tool"]


def test_helm_repository_detected_from_a_plain_path(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    repo = make_helm_repo(chart_writer, tmp_path / "repo", ["1.0.0"])
    config = CatalogConfig(id="helm", location=str(repo))
    assert config.resolved_type() == "helm"
    assert _load(config, tmp_path / "cache").chart_names() == ["app", "tool"]


def test_helm_repository_over_http_with_relative_urls(
    chart_writer: ChartWriter, tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    url, root = http_root
    make_helm_repo(chart_writer, root / "charts", ["2.0.0"])
    catalog = _load(CatalogConfig(id="web", location=f"{url}/charts"), tmp_path / "cache")
    assert catalog.chart_names() == ["app", "tool"]
    assert catalog.latest("app").version == "2.0.0"
    # the archive is cached: a second load works with the server's files gone
    for archive in (root / "charts").glob("*.tgz"):
        archive.unlink()
    assert _load(
        CatalogConfig(id="web", location=f"{url}/charts/index.yaml"), tmp_path / "cache"
    ).chart_names() == ["app", "tool"]


def test_http_errors_and_bad_index_are_catalog_errors(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    url, root = http_root
    with pytest.raises(CatalogError, match="HTTP 404"):
        _load(CatalogConfig(id="web", location=url, type="helm"), tmp_path)
    with_password = url.replace("http://", "http://bot:s3cret@") + "/missing"
    with pytest.raises(CatalogError) as info:
        _load(CatalogConfig(id="web", location=with_password), tmp_path)
    assert "bot:********@" in str(info.value) and "s3cret" not in str(info.value)
    (root / "index.yaml").write_text("just: text\n")
    with pytest.raises(CatalogError, match="no 'entries' mapping"):
        _load(CatalogConfig(id="web", location=url), tmp_path)
    (root / "index.yaml").write_text("entries: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        _load(CatalogConfig(id="web", location=url), tmp_path)


def test_digest_mismatch_and_missing_archive_mark_the_chart_broken(
    chart_writer: ChartWriter, tmp_path: Path
) -> None:
    repo = make_helm_repo(chart_writer, tmp_path / "repo", ["1.0.0"])
    index = yaml.safe_load((repo / "index.yaml").read_text())
    index["entries"]["app"][0]["digest"] = "0" * 64
    index["entries"]["tool"][0]["urls"] = ["missing-0.1.0.tgz"]
    index["entries"]["ghost"] = [{"name": "ghost"}]
    (repo / "index.yaml").write_text(yaml.safe_dump(index))
    catalog = _load(CatalogConfig(id="helm", location=repo.as_uri()), tmp_path / "cache")
    reasons = {b.name: b.reason for b in catalog.broken}
    assert "digest does not match" in reasons["app"]
    assert "cannot read" in reasons["tool"]
    assert "no usable version" in reasons["ghost"]


def _tgz(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"x: 1\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


@pytest.mark.parametrize(
    "member",
    [
        _file("../evil.yaml"),
        _file("app/../../evil.yaml"),
        _file("/etc/evil.yaml"),
        _file("other/Chart.yaml"),
    ],
)
def test_archive_path_traversal_is_refused(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    archive = _tgz([_file("app/Chart.yaml", b"name: app\nversion: 1.0.0\n"), member])
    with pytest.raises(ChartInvalid, match="path traversal refused"):
        extract_chart_archive(archive, tmp_path / "out", "app")
    assert not (tmp_path / "evil.yaml").exists()
    assert not (tmp_path / "out").exists()


def test_archive_links_and_garbage_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("app/templates/link.yaml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ChartInvalid, match="link or special file"):
        extract_chart_archive(_tgz([_file("app/Chart.yaml"), (link, b"")]), tmp_path / "out", "app")
    with pytest.raises(ChartInvalid, match=r"not a \.tgz archive"):
        extract_chart_archive(b"not an archive", tmp_path / "out", "app")
    with pytest.raises(ChartInvalid, match=r"no app/Chart\.yaml"):
        extract_chart_archive(_tgz([_file("app/values.yaml")]), tmp_path / "out", "app")


def test_archive_extracts_into_place(tmp_path: Path) -> None:
    data = b"apiVersion: v2\nname: app\nversion: 1.0.0\n"
    extract_chart_archive(_tgz([_file("app/Chart.yaml", data)]), tmp_path / "out", "app")
    assert (tmp_path / "out" / "app" / "Chart.yaml").read_bytes() == data
    assert hashlib.sha256(data).hexdigest()  # content kept byte for byte


def test_catalog_file(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(
        yaml.safe_dump({"catalogs": [{"id": "one", "location": "charts", "highlighted": ["a"]}]})
    )
    [config] = load_catalog_file(tmp_path / "catalog.yaml")
    assert config.location == str(tmp_path / "charts")
    assert config.display_name == "one"
    (tmp_path / "catalog.yaml").write_text(
        yaml.safe_dump({"catalogs": [{"id": "Bad Id", "location": "x"}]})
    )
    with pytest.raises(CatalogError, match=r"catalogs\[0\]: id: String should match pattern"):
        load_catalog_file(tmp_path / "catalog.yaml")
    (tmp_path / "catalog.yaml").write_text("- just a list\n")
    with pytest.raises(CatalogError, match="expected a mapping with a 'catalogs' list"):
        load_catalog_file(tmp_path / "catalog.yaml")


def test_catalog_config_validation() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unsupported URL scheme 'ftp'"):
        CatalogConfig(id="x", location="ftp://example.org/charts")
    with pytest.raises(ValidationError, match="refresh_interval_s"):
        CatalogConfig(id="x", location="/tmp", refresh_interval_s=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        CatalogConfig.model_validate({"id": "x", "location": "/tmp", "colour": "blue"})


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA), written as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_helm_repository_over_https(
    chart_writer: ChartWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    root = tmp_path / "served"
    make_helm_repo(chart_writer, root, ["3.0.0"])
    cert_file, key_file = _self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        # an untrusted certificate is a clear catalog error...
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        with pytest.raises(
            CatalogError, match=r"cannot fetch https://127\.0\.0\.1.*CERTIFICATE_VERIFY"
        ):
            _load(CatalogConfig(id="tls", location=url), tmp_path / "cache")
        # ...and a trusted one (SSL_CERT_FILE, as for a corporate CA) works
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        catalog = _load(CatalogConfig(id="tls", location=url), tmp_path / "cache")
        assert catalog.chart_names() == ["app", "tool"]
        assert catalog.latest("app").version == "3.0.0"
    finally:
        server.shutdown()
        server.server_close()


def test_listing_masks_a_password_in_the_location() -> None:
    from datalab.catalog import Catalog

    config = CatalogConfig(id="x", location="https://bot:s3cret@charts.example.org:8443/repo")
    assert Catalog(config=config).to_json()["location"] == (
        "https://bot:********@charts.example.org:8443/repo"
    )


def test_helm_checks_run_in_a_child_process_cached_by_content(
    chart_writer: ChartWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    children: list[list[str]] = []
    run_child = helm_check._run_child

    def counted(paths: list[Path]) -> list[str | None]:
        children.append([p.name for p in paths])
        return run_child(paths)

    monkeypatch.setattr(helm_check, "_run_child", counted)
    good = chart_writer("good")
    broken = chart_writer("bad-template", templates={"x.yaml": "{{ .Values.a | nosuchfn }}"})
    for _ in range(2):
        load_chart_dir(good, "lab")
        with pytest.raises(ChartInvalid, match="chart 'bad-template': broken template"):
            load_chart_dir(broken, "lab")
    assert children == [["good"], ["bad-template"]]  # once per content: verdicts are cached
    (good / "templates" / "extra.yaml").write_text("# changed\n")
    load_chart_dir(good, "lab")
    assert children[-1] == ["good"]  # new content, new check
    # a directory catalog checks all its new charts in one child process
    for name in ("one", "two", "three"):
        chart_writer(name, values={"name": name})
    catalog = _load(CatalogConfig(id="lab", location=str(chart_writer.root)), tmp_path)
    assert children[-1] == ["one", "three", "two"]
    assert {c for c in catalog.chart_names()} >= {"one", "two", "three", "good"}

    # the platform process never loads Helm's Go runtime to load a catalog
    script = (
        "import sys; from pathlib import Path; from datalab.catalog import load_chart_dir; "
        f"load_chart_dir(Path({str(good)!r}), 'lab'); "
        "assert 'helm_python' not in sys.modules, 'helm_python imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------ the helm command line


def test_helm_source_names_what_exists(chart_writer: ChartWriter, tmp_path: Path) -> None:
    """The equivalent `helm` command names a chart a user can install: the archive of a
    repository on disk (Helm cannot `repo add` a file:// URL), the chart's directory in a
    directory catalog (after `helm dependency build` when it has dependencies)."""
    repo = make_helm_repo(chart_writer, tmp_path / "repo", ["1.0.0", "1.1.0"])
    on_disk = _load(CatalogConfig(id="helm", location=(repo / "index.yaml").as_uri()), tmp_path)
    source = on_disk.helm_source(on_disk.latest("app"))
    assert source == HelmSource(str(repo / "app-1.1.0.tgz"))
    assert Path(source.ref).is_file()

    remote = Catalog(CatalogConfig(id="ide", location="https://u:pw@charts.example.org/index.yaml"))
    assert remote.helm_source(on_disk.latest("app")) == HelmSource(
        "ide/app", "helm repo add ide 'https://u:********@charts.example.org'"
    )

    directory = chart_writer("plain", directory="plain-dir")
    catalog = _load(CatalogConfig(id="lab", location=str(chart_writer.root)), tmp_path / "c")
    assert catalog.helm_source(catalog.latest("plain")) == HelmSource(str(directory))


def test_helm_source_of_a_chart_with_dependencies(tmp_path: Path) -> None:
    root = tmp_path / "charts"
    write_chart(
        root,
        "lib",
        chart_yaml=yaml.safe_dump({"apiVersion": "v2", "name": "lib", "version": "1.0.0"}),
    )
    app = write_chart(
        root,
        "app",
        chart_yaml=yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "app",
                "version": "1.0.0",
                "dependencies": [
                    {"name": "lib", "version": "1.0.0", "repository": "file://../lib"}
                ],
            }
        ),
    )
    catalog = _load(CatalogConfig(id="lab", location=str(root)), tmp_path / "cache")
    chart = catalog.latest("app")
    assert chart.path != app  # the built copy is the platform's, not the user's
    assert catalog.helm_source(chart) == HelmSource(str(app), f"helm dependency build {app}")
