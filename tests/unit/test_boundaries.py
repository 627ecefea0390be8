"""Only ``tracker/kafka/internals.py`` touches private faust/aiokafka names; what it touches is
listed there with the test that fails without each reach."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INTERNALS = ROOT / "tracker" / "kafka" / "internals.py"
FRAMEWORK = ("faust", "mode", "aiokafka")


def private_reaches(path: Path) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls``, and imports of private framework names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            # os._exit is the standard library's documented immediate exit, not a private name.
            allowed = isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or (owner.id, node.attr) == ("os", "_exit"))
            if not allowed:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FRAMEWORK:
            parts = (node.module or "").split(".") + [alias.name for alias in node.names]
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {p}" for p in parts if p.startswith("_")]
    return found


def test_no_module_but_the_internals_reaches_into_private_names() -> None:
    offenders = []
    for path in sorted([*ROOT.glob("tracker/**/*.py"), *ROOT.glob("tables/*.py"), *ROOT.glob("topics/*.py")]):
        if path != INTERNALS:
            offenders += private_reaches(path)
    assert offenders == []


def test_the_internals_reach_in_and_the_check_would_see_it() -> None:
    assert private_reaches(INTERNALS), "the check found nothing where the reaches are: it cannot fail"


def test_every_test_the_internals_name_exists() -> None:
    """The module's docstring names, for each reach, the test that fails without it."""
    doc = ast.get_docstring(ast.parse(INTERNALS.read_text())) or ""
    named = re.findall(r"``(tests/[\w/]+\.py|test_\w+\.py)(?:::\s*(\w+))?``", doc.replace("::\n  ", "::"))
    assert len(named) >= 8, named
    for file, test in named:
        path = ROOT / file if file.startswith("tests/") else next(ROOT.glob(f"tests/**/{file}"))
        assert path.exists(), file
        if test:
            assert f"def {test}(" in path.read_text(), f"{file}::{test}"
