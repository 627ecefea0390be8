"""docs/architecture.md names files, classes and functions that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
CODE = "\n".join(p.read_text() for p in [*ROOT.glob("tracker/**/*.py"), *ROOT.glob("tables/*.py"), *ROOT.glob("topics/*.py")])


def framework_source() -> str:
    """faust's, mode's and aiokafka's code: the internals the document lists are theirs."""
    import aiokafka
    import faust
    import mode

    return "\n".join(p.read_text() for pkg in (faust, mode, aiokafka) for p in Path(str(pkg.__file__)).parent.rglob("*.py"))


def test_every_file_the_architecture_names_exists() -> None:
    paths = set(re.findall(r"`([\w/]+\.(?:py|md))`", DOC))
    assert len(paths) >= 5, paths
    bases = (ROOT, ROOT / "tracker", ROOT / "docs", ROOT / "tests" / "unit")
    missing = [p for p in paths if not any((base / p).exists() for base in bases)]
    assert missing == []


def test_every_module_of_the_package_map_exists() -> None:
    tree = DOC.split("## Package map")[1].split("```")[1]
    named = set(re.findall(r"\b(\w+\.py)\b", tree))
    assert len(named) >= 30, named
    existing = {p.name for p in [*ROOT.glob("tracker/**/*.py"), *ROOT.glob("tables/*.py"), *ROOT.glob("topics/*.py")]}
    assert sorted(named - existing) == []


def test_every_function_and_class_the_architecture_names_exists() -> None:
    names = set()
    for token in re.findall(r"`([A-Za-z_][\w.]*)(?:\([^`]*\))?`", DOC):
        last = token.split(".")[-1]
        if "." in token or token[0].isupper():
            names.add(last)
    source = CODE + framework_source()
    defined = set(re.findall(r"^\s*(?:async def|def|class) (\w+)", source, re.M))
    attributes = set(re.findall(r"\bself\.(\w+)\s*[:=]", source))
    files = {p.stem for p in ROOT.glob("tracker/**/*.py")} | {"py", "md", "toml", "yml", "yaml"}
    unknown = sorted(n for n in names if n not in defined | attributes | files and not n.isupper())
    assert len(names) >= 30, names
    assert unknown == [], unknown
