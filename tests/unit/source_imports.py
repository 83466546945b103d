"""What a module's source imports, read with ``ast`` (nothing is imported): for the tests
that keep a pure module on the standard library (tests/unit/egress/test_workflow.py,
test_outputs_folder.py, test_file_checks.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType


def imported_packages(module: ModuleType) -> set[str]:
    """The first part of every name ``module``'s source imports, anywhere in it (``""`` for a
    relative ``from . import``): ``import xml.etree`` gives ``xml``."""
    tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    return imported
