"""DESIGN.md's stage order, checked on the source: a lower stage never imports a higher one, lazily or not.

ops <- networks <- checkpoints <- latents <- labels <- directions <- models <- analysis <- cli. The synthetic world
(its generator, factor map and oracle labeler, which hands out ground-truth DirectionSets) sits between directions
and models; errors, utils and the package's `__version__` are below every stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stylegan_disentangle"
STAGES = ("ops", "networks", "checkpoints", "latents", "labels", "directions", "synthetic", "models", "analysis",
          "cli")
BASE = {"errors", "utils", "__version__"}


def stage_of(top: str) -> int | None:
    """Index of a top-level module or subpackage in STAGES (the cli_*.py modules are the cli); None for BASE."""
    if top in BASE:
        return None
    return STAGES.index("cli" if top.startswith("cli") else top)


def imported_tops(path: Path) -> set[str]:
    """The package's top-level modules / subpackages that the file at `path` imports, anywhere in it."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            up = node.level - 1
            parts = package[:len(package) - up] + (node.module.split(".") if node.module else [])
            tops.update([parts[0]] if parts else [alias.name for alias in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stylegan_disentangle."):
            tops.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            tops.update(a.name.split(".")[1] for a in node.names if a.name.startswith("stylegan_disentangle."))
    return tops


def test_the_helpers_resolve_relative_imports():
    deep = PACKAGE / "labels" / "decomposer" / "light_teacher.py"
    tops = imported_tops(deep)
    assert {"latents", "errors", "utils", "labels"} <= tops  # `from ...latents`, `from .renderer` (its own stage)
    assert stage_of("cli_models") == STAGES.index("cli") and stage_of("errors") is None


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or
                                        p.name.startswith("cli")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_stage(path):
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    own = stage_of(top)
    if own is None:  # errors, utils: below every stage, they import none
        higher = sorted(t for t in imported_tops(path) if stage_of(t) is not None)
    else:
        higher = sorted(t for t in imported_tops(path) if (s := stage_of(t)) is not None and s > own)
    assert not higher, f"{path.relative_to(PACKAGE)} ({top}) imports the higher stage(s) {higher}"
