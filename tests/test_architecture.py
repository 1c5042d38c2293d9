"""The house of floors (docs/ARCHITECTURE.md) as a checked property of the code.

Every module of the project (tests aside) has a floor; it may import only from its own
floor or the ones below, lazily (inside a function) or not; no two files import each
other in a circle; no file but a benchmark is longer than ``MAX_LINES`` lines. The scan
reads the source (the AST), so it needs no import of torch and sees imports inside
functions too. The project's tool ``../shared/tools/import_floors.py`` checks the same
rules but knows only the older top-level names; this table is the full one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 650
# First part of a module's dotted name -> its floor (0: the network ... 4: entry points).
FLOORS = {
    "network_options": 0,
    "attention_ops": 0,
    "custom_encoder": 0,
    "model": 0,
    "data_processing": 1,
    "checkpoint": 1,
    "evaluation": 2,
    "training": 3,
    "training_config": 3,
    "training_steps": 3,
    "training_loop": 3,
    "training_start": 3,
    "refiner": 3,
    "tracker": 3,
    "maskformer": 3,
    "training_flash": 4,
    "benchmarks": 4,
}
NOT_SCANNED = {"tests", "data", "runs", "build", "__pycache__"}


def project_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file of every ``.py`` file under ``root`` (tests, data,
    hidden and build folders left out); a package's ``__init__`` is the package."""
    modules = {}
    for path in _python_files(root):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _python_files(folder: Path) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            if not entry.name.startswith(".") and entry.name not in NOT_SCANNED:
                yield from _python_files(entry)
        elif entry.suffix == ".py":
            yield entry


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``module`` (file ``path``) imports anywhere in its source.

    ``from package import name`` counts as an import of ``package.name`` when that is a
    module, else of ``package``; relative imports are resolved against ``module``.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    # An import of a.b.c names a module of the project if some prefix of it is one.
    resolved = set()
    for name in found:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                resolved.add(".".join(parts[:n]))
                break
    resolved.discard(module)
    return resolved


def floor_of(module: str) -> int | None:
    return FLOORS.get(module.split(".")[0])


def check_architecture(root: Path) -> dict[str, list[str]]:
    """Every breach of the rules under ``root``: unclassified modules, upward imports,
    import circles (each as a path ``a -> b -> a``) and files over ``MAX_LINES``."""
    modules = project_modules(root)
    graph = {m: imported_modules(m, p, set(modules)) for m, p in modules.items()}
    unclassified = sorted(m for m in modules if floor_of(m) is None)
    upward = sorted(
        f"{m} (floor {floor_of(m)}) imports {t} (floor {floor_of(t)})"
        for m, targets in graph.items()
        for t in targets
        if floor_of(m) is not None and floor_of(t) is not None and floor_of(t) > floor_of(m)
    )
    too_long = sorted(
        f"{p.relative_to(root)}: {n} lines"
        for m, p in modules.items()
        if not m.startswith("benchmarks")
        and (n := p.read_text(encoding="utf-8").count("\n")) > MAX_LINES
    )
    return {
        "unclassified": unclassified,
        "upward": upward,
        "circles": import_circles(graph),
        "too_long": too_long,
    }


def import_circles(graph: dict[str, set[str]]) -> list[str]:
    """One path ``a -> b -> ... -> a`` for every circle a depth-first walk meets."""
    state: dict[str, str] = {}  # "open" while on the walk's path, "done" after
    path: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_the_project_keeps_its_floors() -> None:
    breaches = check_architecture(REPO_ROOT)
    assert breaches == {"unclassified": [], "upward": [], "circles": [], "too_long": []}
    # The scan sees the whole house, lazy imports included.
    modules = project_modules(REPO_ROOT)
    assert {"network_options", "training_loop", "evaluation.pipeline"} <= set(modules)
    training = imported_modules("training", modules["training"], set(modules))
    assert {"training_config", "training_loop"} <= training  # training_loop: lazily


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize("lazy", [False, True], ids=["top", "lazy"])
def test_the_check_finds_an_upward_import_a_circle_and_a_long_file(
    tmp_path: Path, lazy: bool
) -> None:
    upward = "from evaluation.inference import predict\n"
    if lazy:
        upward = "def f():\n    " + upward
    _write(
        tmp_path,
        {
            "model.py": upward,
            "evaluation/__init__.py": "",
            "evaluation/inference.py": "from . import scoring\n",
            "evaluation/scoring.py": "import evaluation.inference\n",
            "data_processing/__init__.py": "",
            "data_processing/big.py": "x = 1\n" * (MAX_LINES + 1),
            "benchmarks/long.py": "x = 1\n" * (MAX_LINES + 1),
            "tests/test_x.py": "import benchmarks.long\n",
            "newtool.py": "import model\n",
        },
    )
    breaches = check_architecture(tmp_path)
    assert breaches["upward"] == ["model (floor 0) imports evaluation.inference (floor 2)"]
    assert breaches["circles"] == [
        "evaluation.inference -> evaluation.scoring -> evaluation.inference"
    ]
    assert breaches["too_long"] == [f"data_processing/big.py: {MAX_LINES + 1} lines"]
    assert breaches["unclassified"] == ["newtool"]
