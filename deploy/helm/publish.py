"""Publish Helm charts as a chart repository: a folder of ``<name>-<version>.tgz`` archives and
their ``index.yaml``, served as static files (GitHub Pages, an S3 bucket...), which is how
Onyxia's catalogs are published and what ``helm repo add`` and datalab's catalog sources read.

    python deploy/helm/publish.py --repository pages/ --url https://me.github.io/datalab \\
        deploy/helm/datalab catalog/*/

Each chart is packaged at the version its Chart.yaml says, with helm-python-sdk (Helm's Go SDK:
no helm binary). A published version is never replaced: the same version with the same content
is left as it is; with other content it is an error (bump the chart's version). The index keeps
every archive in the folder and the entries of an existing index.yaml.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

import helm_python


class PublishError(Exception):
    """Something to fix before publishing; the message says what."""


def _contents(archive: Path) -> dict[str, bytes]:
    """An archive's files and their bytes (its tar metadata, times included, aside)."""
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def publish(repository: Path, url: str, charts: list[Path]) -> list[str]:
    """Add the charts to the repository folder and write its index; what was done, per chart."""
    repository.mkdir(parents=True, exist_ok=True)
    done = []
    with tempfile.TemporaryDirectory() as staging:
        for chart in charts:
            try:
                packaged = Path(helm_python.package(chart, destination=staging))
            except helm_python.HelmError as exc:
                raise PublishError(f"{chart}: Helm cannot package it: {exc}") from None
            published = repository / packaged.name
            if not published.exists():
                published.write_bytes(packaged.read_bytes())
                done.append(f"{packaged.name}: added")
            elif _contents(published) == _contents(packaged):
                done.append(f"{packaged.name}: already published")
            else:
                raise PublishError(
                    f"{chart}: {packaged.name} is already published with other content: "
                    "bump the version in its Chart.yaml"
                )
    index = repository / "index.yaml"
    helm_python.repo_index_generate(
        repository, base_url=url.rstrip("/"), merge=index if index.exists() else None
    )
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, required=True, help="the repository folder")
    parser.add_argument("--url", required=True, help="the URL the folder is served at")
    parser.add_argument("charts", type=Path, nargs="+", help="chart directories")
    args = parser.parse_args(argv)
    try:
        for line in publish(args.repository, args.url, args.charts):
            print(line)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
