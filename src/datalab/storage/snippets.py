"""Code snippets that reach an object with the caller's current credentials, so users learn
the tools rather than depend on the platform (Onyxia's principle). Pure functions."""

from __future__ import annotations

from urllib.parse import urlparse

from datalab.storage.service import S3Credentials

LANGUAGES = (
    "boto3",
    "s3fs",
    "pandas",
    "polars",
    "pyarrow",
    "duckdb",
    "aws-cli",
    "mc",
    "rclone",
)


def snippets(
    endpoint_url: str, region: str, credentials: S3Credentials, bucket: str, key: str = ""
) -> dict[str, str]:
    """One snippet per tool, for ``s3://bucket/key`` (or the bucket when no key)."""
    target = f"{bucket}/{key}" if key else bucket
    uri = f"s3://{target}"
    access, secret = credentials.access_key_id, credentials.secret_access_key
    token = credentials.session_token
    parsed = urlparse(endpoint_url)
    host = parsed.netloc
    secure = parsed.scheme == "https"
    env = (
        f"export AWS_ACCESS_KEY_ID={access}\n"
        f"export AWS_SECRET_ACCESS_KEY={secret}\n"
        + (f"export AWS_SESSION_TOKEN={token}\n" if token else "")
        + f"export AWS_DEFAULT_REGION={region}\n"
        f"export AWS_ENDPOINT_URL={endpoint_url}\n"
    )
    storage_options = (
        "{\n"
        f'    "key": "{access}",\n'
        f'    "secret": "{secret}",\n'
        + (f'    "token": "{token}",\n' if token else "")
        + f'    "client_kwargs": {{"endpoint_url": "{endpoint_url}", "region_name": "{region}"}},\n'
        "}"
    )
    table = key.lower().endswith((".parquet", ".pq"))
    pandas_read = "read_parquet" if table else "read_csv"
    polars_read = "read_parquet" if table else "read_csv"
    duckdb_read = "read_parquet" if table else "read_csv_auto"
    session_line = f'    aws_session_token="{token}",\n' if token else ""
    return {
        "boto3": (
            "import boto3\n\n"
            "s3 = boto3.client(\n"
            '    "s3",\n'
            f'    endpoint_url="{endpoint_url}",\n'
            f'    aws_access_key_id="{access}",\n'
            f'    aws_secret_access_key="{secret}",\n'
            f"{session_line}"
            f'    region_name="{region}",\n'
            ")\n"
            + (
                f's3.download_file("{bucket}", "{key}", "{key.rsplit("/", 1)[-1]}")\n'
                if key
                else f'print(s3.list_objects_v2(Bucket="{bucket}").get("Contents", []))\n'
            )
        ),
        "s3fs": (
            "import s3fs\n\n"
            f"fs = s3fs.S3FileSystem(**{storage_options})\n"
            + (
                f'with fs.open("{target}", "rb") as f:\n    data = f.read()\n'
                if key
                else f'print(fs.ls("{bucket}"))\n'
            )
        ),
        "pandas": (
            "import pandas as pd\n\n"
            f'df = pd.{pandas_read}("{uri}", storage_options={storage_options})\n'
        ),
        "polars": (
            "import polars as pl\n\n"
            f'df = pl.{polars_read}("{uri}", storage_options={{\n'
            f'    "aws_access_key_id": "{access}",\n'
            f'    "aws_secret_access_key": "{secret}",\n'
            + (f'    "aws_session_token": "{token}",\n' if token else "")
            + f'    "aws_region": "{region}",\n'
            f'    "aws_endpoint_url": "{endpoint_url}",\n'
            "})\n"
        ),
        "pyarrow": (
            "import pyarrow.parquet as pq\n"
            "from pyarrow import fs\n\n"
            "s3 = fs.S3FileSystem(\n"
            f'    access_key="{access}",\n'
            f'    secret_key="{secret}",\n'
            + (f'    session_token="{token}",\n' if token else "")
            + f'    region="{region}",\n'
            f'    endpoint_override="{host}",\n'
            f'    scheme="{parsed.scheme or "http"}",\n'
            ")\n"
            f'table = pq.read_table("{target}", filesystem=s3)\n'
        ),
        # text shown to the user, never executed by the platform
        "duckdb": (
            "INSTALL httpfs; LOAD httpfs;\n"  # noqa: S608
            "CREATE SECRET (\n"
            "    TYPE s3,\n"
            f"    KEY_ID '{access}',\n"
            f"    SECRET '{secret}',\n"
            + (f"    SESSION_TOKEN '{token}',\n" if token else "")
            + f"    REGION '{region}',\n"
            f"    ENDPOINT '{host}',\n"
            f"    USE_SSL {'true' if secure else 'false'},\n"
            "    URL_STYLE 'path'\n"
            ");\n"
            f"SELECT * FROM {duckdb_read}('{uri}') LIMIT 10;\n"
        ),
        "aws-cli": env + (f"aws s3 cp {uri} .\n" if key else f"aws s3 ls {uri}/\n"),
        # mc takes session credentials from MC_HOST_<alias> only
        "mc": (
            f"export MC_HOST_datalab={parsed.scheme or 'http'}://{access}:{secret}"
            + (f":{token}" if token else "")
            + f"@{host}\n"
            + (f"mc cp datalab/{target} .\n" if key else f"mc ls datalab/{bucket}\n")
        ),
        "rclone": (
            "rclone config create datalab s3 provider Other "
            f"access_key_id {access} secret_access_key {secret}"
            + (f" session_token {token}" if token else "")
            + f" endpoint {endpoint_url} region {region}\n"
            + (f"rclone copy datalab:{target} .\n" if key else f"rclone ls datalab:{bucket}\n")
        ),
    }
