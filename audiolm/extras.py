"""Optional dependencies: a missing one is an ImportError that says which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Imports `module`; if it is not installed, raises ImportError naming
    `pip install 'audiolm[<extra>]'` and what needs it (`purpose`)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'audiolm[{extra}]'") from e
