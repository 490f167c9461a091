"""Local "images": cached, locked virtual environments built with uv, one per distinct recipe
environment, shared by every service that uses it."""

from datalab.envs.manager import Env, EnvInfo, EnvManager, EnvSpec, ProgressCallback
from datalab.errors import EnvBuildError

__all__ = [
    "Env",
    "EnvBuildError",
    "EnvInfo",
    "EnvManager",
    "EnvSpec",
    "ProgressCallback",
]
