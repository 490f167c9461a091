"""The autocode prediction API (FastAPI): ``create_app(Settings())``, or from a shell
``python -m autocode.serve --model models:/<name>@<alias>``. See ``docs/autocode-api.md``."""

from autocode.serve.settings import Settings


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """`autocode.serve.app.create_app`, imported on first use (it pulls FastAPI and MLflow)."""
    from autocode.serve.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["Settings", "create_app"]
