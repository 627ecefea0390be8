"""Load saga definitions from YAML files (the operators' format)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from tracker.core.definitions import Catalog, SagaDefinition, sagas_from_document
from tracker.core.errors import DefinitionError

BUILTIN = ("order_fulfilment.yaml", "task_assignment.yaml")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML key given twice is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_text(text: str, *, file: str) -> list[SagaDefinition]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise DefinitionError(f"not valid YAML: {exc}", file=file) from None
    return sagas_from_document(data, file=file)


def load_file(path: str | Path) -> list[SagaDefinition]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read: {exc}", file=str(p)) from None
    return parse_text(text, file=str(p))


def builtin_paths() -> list[Path]:
    root = resources.files("tracker") / "sagas"
    return [Path(str(root / name)) for name in BUILTIN]


def load_catalog(paths: list[str] | list[Path] | None = None) -> Catalog:
    """Every definition in ``paths`` (files or directories of *.yaml); the shipped ones by default."""
    files: list[Path] = []
    for p in map(Path, paths or builtin_paths()):
        files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]) if p.is_dir() else [p])
    definitions: list[SagaDefinition] = []
    for f in files:
        definitions.extend(load_file(f))
    return Catalog.build(definitions, file=", ".join(map(str, files)))
