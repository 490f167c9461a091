"""Where models saved before the class moved into `autocode.model.pyfunc` find it: MLflow
pickles the model's class by its module path (``autocode.pyfunc.AutocodeModel``), so this name
must keep loading them."""

from autocode.model.pyfunc import AutocodeModel

__all__ = ["AutocodeModel"]
