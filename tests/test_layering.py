"""Dependencies point one way, with no exemption: cli and testing -> train -> pipeline, core <- everything.

Every module's imports under the three source folders are read with ast (top-level and function-level imports
alike: a lazy import is still a dependency), turned into a graph of the project's own modules, and checked for
cycles and for imports that point up a layer: pipeline never names train, the CLI or the testing builders; train
never names the CLI or the testing builders; pipeline.core names no other subpackage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"whisper_tune": "whisper_tune", "pipeline": "whisper_tune.pipeline", "train": "whisper_tune.train"}
LAYERS = (   # (importer prefix, what it must never import)
    ("whisper_tune.pipeline", ("whisper_tune.train", "whisper_tune.cli", "whisper_tune.testing")),
    ("whisper_tune.train", ("whisper_tune.cli", "whisper_tune.testing")),
    ("whisper_tune.pipeline.core", ("whisper_tune.pipeline.",)),
)
# The GPU side needs no audio library: only transcribe (new audio in) may name the features stage's audio side.
AUDIO_SIDE = tuple(f"whisper_tune.pipeline.featurize.{m}" for m in ("audio", "augment", "logmel", "work", "stage"))
MAY_DECODE_AUDIO = ("whisper_tune.train.inference.transcribe",)


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for folder in FOLDERS for p in sorted((root / folder).rglob("*.py"))}


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


def _under(name: str, prefix: str) -> bool:
    return name.startswith(prefix) if prefix.endswith(".") else name == prefix or name.startswith(prefix + ".")


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs that point up a layer (LAYERS)."""
    bad = set()
    for a, deps in graph.items():
        for low, forbidden in LAYERS:
            if _under(a, low):
                bad.update((a, b) for b in deps if any(_under(b, f) for f in forbidden)
                           and not _under(b, low))
    return sorted(bad)


# ------------------------------------------------------------------------------------------------------ the project

def test_project_has_no_import_cycle():
    graph = import_graph(ROOT)
    assert "whisper_tune.pipeline.models.source" in graph and "whisper_tune.train.inference.evaluate" in graph   # the walk found the tree
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_training_side_never_names_the_audio_side():
    graph = import_graph(ROOT)
    bad = sorted((a, b) for a, deps in graph.items() if _under(a, "whisper_tune.train") and a not in MAY_DECODE_AUDIO
                 for b in deps if b in AUDIO_SIDE)
    assert bad == []


def test_no_import_points_up_a_layer():
    assert upward_imports(import_graph(ROOT)) == []


# --------------------------------------------------------------------------------------- the detector can fail

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in FOLDERS:
        (root / folder).mkdir(exist_ok=True)
        (root / folder / "__init__.py").touch()
    return root


def test_detector_finds_a_cycle_through_a_lazy_relative_import(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\n",
        "pipeline/models/source.py": "from .importer import run\n",
        "pipeline/models/importer.py": "def run():\n    from .source import resolve\n",
        "pipeline/ok.py": "import whisper_tune.pipeline.models\n",
    })
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and set(cycle) == {"whisper_tune.pipeline.models.source", "whisper_tune.pipeline.models.importer"}


def test_detector_accepts_a_package_reexporting_its_modules(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\nfrom . import folder\n",
        "pipeline/models/source.py": "from .folder import read\nfrom ..core.tokens import SOT\n",
        "pipeline/models/folder.py": "from whisper_tune.pipeline.core.tokens import SOT\n",
        "pipeline/core/tokens.py": "SOT = 1\n",
        "train/model.py": "from whisper_tune.pipeline.models import resolve\n",
    })
    graph = import_graph(root)
    assert graph["whisper_tune.pipeline.models.source"] == {"whisper_tune.pipeline.models.folder", "whisper_tune.pipeline.core.tokens"}
    assert graph["whisper_tune.train.model"] == {"whisper_tune.pipeline.models"}
    assert find_cycle(graph) is None and upward_imports(graph) == []


def test_detector_finds_a_submodule_importing_its_reexporting_package(tmp_path):
    root = _write(tmp_path, {
        "pipeline/models/__init__.py": "from .source import resolve\n",
        "pipeline/models/source.py": "from whisper_tune.pipeline.models import folder\n",
        "pipeline/models/folder.py": "",
        "pipeline/models/importer.py": "from whisper_tune.pipeline.models import resolve\n",
    })
    graph = import_graph(root)
    assert graph["whisper_tune.pipeline.models.source"] == {"whisper_tune.pipeline.models.folder"}     # a submodule named directly
    assert find_cycle(graph) is None
    (root / "pipeline/models/__init__.py").write_text("from .source import resolve\nfrom .importer import run\n")
    assert set(find_cycle(import_graph(root))) == {"whisper_tune.pipeline.models", "whisper_tune.pipeline.models.importer"}


@pytest.mark.parametrize("importer, target, allowed", [
    ("pipeline/stage.py", "train/trainer.py", False), ("pipeline/validate/cli.py", "train/trainer.py", False),
    ("whisper_tune/cli/train.py", "train/trainer.py", True), ("train/trainer.py", "whisper_tune/cli/x.py", False),
    ("pipeline/core/config.py", "pipeline/cache/index.py", False), ("pipeline/cache/index.py", "pipeline/core/config.py", True),
])
def test_detector_flags_an_import_up_a_layer(tmp_path, importer, target, allowed):
    imported = module_name(tmp_path / target, tmp_path)
    root = _write(tmp_path, {importer: f"def run():\n    import {imported}\n", target: ""})
    bad = upward_imports(import_graph(root))
    assert bad == ([] if allowed else [(module_name(root / importer, root), imported)])
