"""The pure core (``tracker/core/``, every module in it) imports only the standard library."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "tracker" / "core"


def core_modules() -> list[str]:
    """Every module under tracker/core, subpackages included."""
    names = []
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(CORE.parents[1]).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_every_core_module_imports_only_the_standard_library() -> None:
    """In a fresh interpreter: import the whole core, then every module loaded is the standard
    library's or the core's own (``tracker`` and ``tracker.core`` are packages without code)."""
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "std = sys.stdlib_module_names\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] not in std and m not in ('tracker', 'tracker.core')"
        " and not m.startswith('tracker.core.') and m != '__main__')\n"
        "print(','.join(bad))\n"
    )
    # -S: no site packages, so no import hooks of theirs loaded at startup; the core comes from the checkout.
    run = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=CORE.parents[1])
    out = run.stdout.strip()
    assert out == ""


def test_the_core_s_import_statements_name_only_the_standard_library_or_the_core() -> None:
    """The same, statically, for imports a module makes only inside a function."""
    assert len(core_modules()) >= 8, core_modules()  # the check covers the folder, not a list
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import"
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or name.startswith("tracker.core"), f"{path.name} imports {name}"
