"""External tools the tests need: with CI=true a missing one fails the run, elsewhere it skips."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing (CI=true: a missing tool fails the run)")
    pytest.skip(f"{what} is missing")


def tool(name: str, package: str = "") -> str:
    """The path of a command: on PATH, or installed in this Python's environment."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name) or (str(here) if here.exists() else None)
    if found is None:
        missing(f"{name}" + (f" (Debian package {package})" if package else ""))
    return found
