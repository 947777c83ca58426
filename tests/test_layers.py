"""Imports flow one way (``../shared/DESIGN.md``): no module imports a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import llm4rec

#: layer of each top-level part of the package; a module may import its own layer or lower ones
LAYERS = {"errors": 0, "_atomic": 0, "_random": 0, "_runinfo": 0, "ranking": 0, "data": 1, "text": 2, "nn": 3, "training": 4, "models": 5,
          "strategies": 6, "evaluation": 7, "batch": 7, "experiments": 7, "serving": 8, "testing": 9, "distributed": 9, "cli": 10, "__main__": 10}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def test_no_module_imports_a_higher_layer():
    root = Path(llm4rec.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYERS, f"{own} has no layer in this test"
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                if name.startswith("llm4rec.") and LAYERS.get(_part(name), -1) > LAYERS[own]:
                    bad.append(f"{path.relative_to(root)} imports {name}")
    assert not bad, "\n".join(bad)


def test_nothing_outside_distributed_imports_ray_when_imported():
    """The core runs without the ray extra: ray (and llm4rec.distributed) are imported only inside functions,
    never at a module's top level, outside ``llm4rec.distributed``."""
    root = Path(llm4rec.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        if path.relative_to(root).parts[0] == "distributed":
            continue
        for node in ast.parse(path.read_text()).body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            bad += [f"{path.relative_to(root)} imports {n}" for n in names
                    if n == "ray" or n.startswith(("ray.", "llm4rec.distributed"))]
    assert not bad, "\n".join(bad)
