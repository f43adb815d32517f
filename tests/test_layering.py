"""Dependencies point one way: train -> pipeline, and no module imports itself back through others.

Every module's imports under pipeline/ and train/ are read with ast (top-level and function-level imports alike:
a lazy import is still a dependency), turned into a graph of the project's own modules, and checked for cycles and
for pipeline modules importing train. Only the CLI (pipeline/cli*) may import train, lazily, to dispatch commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "train")
CLI_PREFIXES = ("pipeline.cli",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The project modules `source` imports: `import a.b`, `from a import b` (b a module or a name in a)."""
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:        # a name inside a module counts as that module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            for alias in node.names:
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = project_modules(root)
    known = set(modules)
    return {name: imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [m1, m2, ..., m1], or None. A package's __init__ is a module like any other: one that
    re-exports its submodules is fine until a submodule imports the package back."""
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(pipeline module, train module) pairs where a non-CLI pipeline module imports train."""
    return sorted((a, b) for a, deps in graph.items() for b in deps
                  if a.split(".")[0] == "pipeline" and b.split(".")[0] == "train"
                  and not a.startswith(CLI_PREFIXES))


# ------------------------------------------------------------------------------------------------------ the project

def test_project_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert "pipeline.models.source" in graph and "train.inference.evaluate" in graph   # the walk found the tree
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_pipeline_never_imports_train_outside_the_cli():
    assert upward_imports(import_graph(ROOT)) == []


# --------------------------------------------------------------------------------------- the detector can fail

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in PACKAGES:
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


def test_detector_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\n",
        "pipeline/models/source.py": "from .importer import run\n",
        "pipeline/models/importer.py": "def run():\n    from .source import resolve\n",
        "pipeline/ok.py": "import pipeline.models\n",
    })
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and set(cycle) == {"pipeline.models.source", "pipeline.models.importer"}


def test_detector_accepts_a_package_reexporting_its_modules(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\nfrom . import folder\n",
        "pipeline/models/source.py": "from .folder import read\nfrom ..tokens import SOT\n",
        "pipeline/models/folder.py": "from pipeline.tokens import SOT\n",
        "pipeline/tokens.py": "SOT = 1\n",
        "train/model.py": "from pipeline.models import resolve\n",
    })
    graph = import_graph(root)
    assert graph["pipeline.models.source"] == {"pipeline.models.folder", "pipeline.tokens"}
    assert graph["train.model"] == {"pipeline.models"}
    assert find_cycle(graph) is None and upward_imports(graph) == []


def test_detector_finds_a_submodule_importing_its_reexporting_package(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\n",
        "pipeline/models/source.py": "from pipeline.models import folder\n",
        "pipeline/models/folder.py": "",
        "pipeline/models/importer.py": "from pipeline.models import resolve\n",
    })
    graph = import_graph(root)
    assert graph["pipeline.models.source"] == {"pipeline.models.folder"}     # a submodule named directly
    assert find_cycle(graph) is None
    (root / "pipeline/models/__init__.py").write_text("from .source import resolve\nfrom .importer import run\n")
    assert set(find_cycle(import_graph(root))) == {"pipeline.models", "pipeline.models.importer"}


@pytest.mark.parametrize("importer, allowed", [("pipeline/stage.py", False), ("pipeline/cli.py", True),
                                               ("pipeline/cli/train.py", True)])
def test_detector_flags_pipeline_importing_train(tmp_path, importer, allowed):
    root = _write(tmp_path, {importer: "def run():\n    from train.trainer import run_train\n",
                             "train/trainer.py": "import pipeline.config\n", "pipeline/config.py": ""})
    bad = upward_imports(import_graph(root))
    assert bad == ([] if allowed else [(module_name(root / importer, root), "train.trainer")])
