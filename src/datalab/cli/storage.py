"""``datalab s3``: the object storage from the command line (``ls``, ``cp``, ``rm``, ``mb``,
``share``, ``public``, ``preview``, ``credentials``), through the platform's storage API.

Paths are ``s3://BUCKET/KEY`` (``s3://`` may be omitted); the buckets are your personal
project's and the project you act in (``--project``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from datalab.cli.common import (
    Output,
    OutputOption,
    ProjectOption,
    client,
    console,
    fail,
    print_json,
    print_table,
)
from datalab.client import Client, ClientError

s3_app = typer.Typer(help="Object storage (S3): list, copy, delete, share, preview.")

CHUNK = 1024 * 1024
DURATION = re.compile(r"^(\d+)([smhd]?)$")


def split_path(path: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key)."""
    bare = path.removeprefix("s3://")
    bucket, _, key = bare.partition("/")
    if not bucket:
        raise typer.BadParameter(f"{path!r} names no bucket: use s3://BUCKET/KEY")
    return bucket, key


def parse_duration(text: str) -> int:
    match = DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 3600, 30m, 12h or 7d")
    value, unit = int(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _object_url(bucket: str, key: str) -> str:
    return f"/api/storage/buckets/{quote(bucket)}/objects/{quote(key)}"


def _headers(api: Client) -> dict[str, str]:
    headers = {}
    if api.token:
        headers["Authorization"] = f"Bearer {api.token}"
    if api.project:
        headers["X-Datalab-Project"] = api.project
    return headers


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    raise ClientError(message, response.status_code)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    )


def upload(api: Client, source: Path, bucket: str, key: str) -> dict[str, Any]:
    size = source.stat().st_size
    with _progress() as progress:
        task = progress.add_task(f"upload {source.name}", total=size)

        def body() -> Iterator[bytes]:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    progress.advance(task, len(chunk))
                    yield chunk

        try:
            response = httpx.put(
                api.url + _object_url(bucket, key),
                content=body(),
                headers={**_headers(api), "Content-Length": str(size)},
                timeout=httpx.Timeout(None, connect=10.0),
            )
        except httpx.ConnectError:
            raise ClientError(f"cannot reach the platform at {api.url}") from None
    _raise_for(response)
    return dict(response.json())


def download(api: Client, bucket: str, key: str, target: Path) -> int:
    written = 0
    try:
        with httpx.stream(
            "GET",
            api.url + _object_url(bucket, key),
            headers=_headers(api),
            timeout=httpx.Timeout(None, connect=10.0),
        ) as response:
            _raise_for(response)
            total = int(response.headers.get("content-length", 0)) or None
            partial = target.with_name(target.name + ".part")
            with _progress() as progress, partial.open("wb") as handle:
                task = progress.add_task(f"download {key.rsplit('/', 1)[-1]}", total=total)
                for chunk in response.iter_bytes(CHUNK):
                    handle.write(chunk)
                    written += len(chunk)
                    progress.advance(task, len(chunk))
            partial.replace(target)  # no half-written file under the final name
    except httpx.ConnectError:
        raise ClientError(f"cannot reach the platform at {api.url}") from None
    return written


@s3_app.command("ls")
def ls(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX (default: your buckets).")] = "",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="No folders.")] = False,
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """List buckets, or the objects and folders under a prefix."""
    api = client(project)
    if not path:
        buckets = api.get("/api/storage/buckets")
        if output is Output.json:
            print_json(buckets)
        else:
            for bucket in buckets["buckets"]:
                console.print(f"s3://{bucket}/", highlight=False)
        return
    bucket, prefix = split_path(path)
    params: dict[str, Any] = {"prefix": prefix, "delimiter": "" if recursive else "/"}
    folders: list[str] = []
    objects: list[dict[str, Any]] = []
    while True:
        page = api.get(f"/api/storage/buckets/{quote(bucket)}/objects", params=params)
        folders += page["folders"]
        objects += page["objects"]
        if not page["next_token"]:
            break
        params["token"] = page["next_token"]
    if output is Output.json:
        print_json({"bucket": bucket, "prefix": prefix, "folders": folders, "objects": objects})
        return
    rows = [{"key": f, "size": "", "last_modified": ""} for f in folders] + objects
    print_table(rows, ["key", "size", "last_modified"], title=f"s3://{bucket}/{prefix}")


@s3_app.command("cp")
def cp(
    source: Annotated[str, typer.Argument(help="Local file or s3://BUCKET/KEY.")],
    target: Annotated[str, typer.Argument(help="s3://BUCKET/KEY (or .../ ) or a local path.")],
    project: ProjectOption = None,
) -> None:
    """Copy a local file to the storage (upload) or an object to a local file (download)."""
    api = client(project)
    if source.startswith("s3://") == target.startswith("s3://"):
        raise fail("copy between a local file and s3://BUCKET/KEY (exactly one of each)", 2)
    if target.startswith("s3://"):
        local = Path(source)
        if not local.is_file():
            raise fail(f"{source} is not a file")
        bucket, key = split_path(target)
        if not key or key.endswith("/"):
            key += local.name
        done = upload(api, local, bucket, key)
        console.print(f"uploaded s3://{bucket}/{key} ({done['size']} bytes)", highlight=False)
        return
    bucket, key = split_path(source)
    if not key or key.endswith("/"):
        raise fail(f"{source} names no object")
    local = Path(target)
    if local.is_dir():
        local = local / key.rsplit("/", 1)[-1]
    size = download(api, bucket, key, local)
    console.print(f"downloaded {local} ({size} bytes)", highlight=False)


@s3_app.command("rm")
def rm(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/KEY or s3://BUCKET/FOLDER/.")],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Delete a folder and all it holds.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete an object, or a folder with --recursive (after confirmation)."""
    bucket, key = split_path(path)
    if recursive and not yes:
        typer.confirm(f"Delete s3://{bucket}/{key} and everything under it?", abort=True)
    answer = client(project).request(
        "DELETE", _object_url(bucket, key), params={"recursive": str(recursive).lower()}
    )
    console.print(f"deleted {len(answer['deleted'])} object(s)", highlight=False)


@s3_app.command("mb")
def mb(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/FOLDER/ to create.")],
    project: ProjectOption = None,
) -> None:
    """Make a folder (buckets themselves are created by the platform, one per project)."""
    bucket, key = split_path(path)
    if not key:
        raise fail(
            "buckets are created by the platform (one per project); name a folder: "
            "s3://BUCKET/FOLDER/"
        )
    folder = key if key.endswith("/") else key + "/"
    client(project).request("PUT", _object_url(bucket, folder))
    console.print(f"created s3://{bucket}/{folder}", highlight=False)


@s3_app.command("share")
def share(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/KEY to share.")],
    expires: Annotated[
        str, typer.Option("--expires", help="Link lifetime: seconds, or 30m, 12h, 7d.")
    ] = "1h",
    project: ProjectOption = None,
) -> None:
    """Print a presigned download link that anyone can use until it expires."""
    bucket, key = split_path(path)
    answer = client(project).post(
        f"/api/storage/buckets/{quote(bucket)}/share",
        json={"key": key, "expires_s": parse_duration(expires)},
    )
    sys.stdout.write(answer["url"] + "\n")


@s3_app.command("public")
def public(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/PREFIX to open or close.")],
    private: Annotated[bool, typer.Option("--private", help="Make it private again.")] = False,
    project: ProjectOption = None,
) -> None:
    """Make a prefix readable by anyone (or private again with --private)."""
    bucket, prefix = split_path(path)
    client(project).request(
        "PUT",
        f"/api/storage/buckets/{quote(bucket)}/public",
        json={"prefix": prefix, "public": not private},
    )
    state = "private" if private else "public"
    console.print(f"s3://{bucket}/{prefix} is {state}", highlight=False)


@s3_app.command("preview")
def preview(
    path: Annotated[str, typer.Argument(help="s3://BUCKET/KEY of a Parquet, CSV or JSON file.")],
    rows: Annotated[int, typer.Option("--rows", "-n", help="Rows to show.")] = 10,
    format: Annotated[str | None, typer.Option(help="parquet, csv or json.")] = None,
    project: ProjectOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Show the schema and first rows of a tabular file, without downloading it."""
    bucket, key = split_path(path)
    params: dict[str, Any] = {"rows": rows}
    if format:
        params["format"] = format
    answer = client(project).get(
        f"/api/storage/buckets/{quote(bucket)}/preview/{quote(key)}", params=params
    )
    if output is Output.json:
        print_json(answer)
        return
    columns = [c["name"] for c in answer["schema"]] or sorted(
        {k for r in answer["rows"] if isinstance(r, dict) for k in r}
    )
    schema = ", ".join(f"{c['name']}: {c['type']}" for c in answer["schema"])
    if schema:
        console.print(f"[dim]{schema}[/dim]", highlight=False)
    print_table([r for r in answer["rows"] if isinstance(r, dict)], columns, title=path)


@s3_app.command("credentials")
def credentials(
    process: Annotated[
        bool,
        typer.Option(
            "--process", help="Print an AWS credential_process answer (for ~/.aws/config)."
        ),
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Print S3 session credentials for you in the project, as shell exports."""
    answer = client(project).get("/api/storage/credentials")
    issued = answer["credential_process"]
    if process:
        sys.stdout.write(json.dumps(issued) + "\n")
        return
    lines = [
        f"export AWS_ACCESS_KEY_ID={issued['AccessKeyId']}",
        f"export AWS_SECRET_ACCESS_KEY={issued['SecretAccessKey']}",
        f"export AWS_SESSION_TOKEN={issued.get('SessionToken', '')}",
        f"export AWS_DEFAULT_REGION={answer['region']}",
        f"export AWS_ENDPOINT_URL={answer['endpoint_url']}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(s3_app, name="s3")
