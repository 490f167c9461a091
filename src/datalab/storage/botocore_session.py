"""The boto3 session behind the platform's S3 and STS clients, with botocore's table of AWS
endpoints cut down to those two services.

botocore loads its whole endpoint table (``endpoints.json``: 300 services, 1.2 MB, ~4 MB of
Python objects) with the first client, although the platform always gives the endpoint URL and
calls only S3 and STS. botocore reads its data files from the ``data_path`` directories first,
so a copy of the table with only ``s3`` and ``sts`` (every partition and region kept: they
resolve exactly as with the full table) is written once per botocore version to
``$XDG_CACHE_HOME/datalab/botocore-<version>/`` and put first on that path.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import boto3
import botocore
import botocore.session
import platformdirs

SERVICES = ("s3", "sts")


def data_dir() -> Path:
    return platformdirs.user_cache_path("datalab") / f"botocore-{botocore.__version__}"


def _write_endpoint_subset(directory: Path) -> None:
    full = Path(botocore.__file__).parent / "data" / "endpoints.json"
    table = json.loads(full.read_text())
    for partition in table["partitions"]:
        services = partition["services"]
        partition["services"] = {name: services[name] for name in SERVICES if name in services}
    directory.mkdir(parents=True, exist_ok=True)
    # written then renamed: concurrent platforms never read half a file
    fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(table, handle)
    os.replace(temporary, directory / "endpoints.json")


@functools.cache
def session() -> boto3.session.Session:
    directory = data_dir()
    try:
        if not (directory / "endpoints.json").exists():
            _write_endpoint_subset(directory)
    except OSError:  # no writable cache: botocore's own table, only larger
        return boto3.session.Session()
    core = botocore.session.get_session()
    core.set_config_variable("data_path", str(directory))
    return boto3.session.Session(botocore_session=core)
