"""The house: imports only go down the floors, the probe flows, and only the seam and the
models know the kinds of model."""

import ast
from pathlib import Path

import torch
from torch import nn

import featvis.seam.module
from featvis import VisualizeSettings, probe, visualize

SRC = Path(__file__).resolve().parents[1] / "src" / "featvis"
# Floors from the ground up; a module may import its own floor and the floors below.
FLOORS = [("errors", "units", "devices", "params", "figures", "_version"), ("io",),
          ("data",), ("models",), ("seam",), ("methods", "objectives"), ("report",),
          ("pipeline",),
          ("cli", "__main__", "__init__")]


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each featvis module -> the featvis modules it imports (anywhere in its code)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):            # imports for type checkers only do not run
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}" if target else alias.name
                    found.add(full if full in modules else target)
        graph[name] = {t for t in found if t in modules and t != name}
    return graph


def _floor(module: str) -> int:
    top = module.split(".")[0] or "__init__"
    return next(i for i, names in enumerate(FLOORS) if top in names)


def test_no_import_runs_up_a_floor():
    upward = [(a, b) for a, targets in _imports().items() for b in targets
              if _floor(a or "__init__") < _floor(b or "__init__")]
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            # a package's face importing its own modules is not a cycle back into it
            if state.get(nxt) == 1 and not nxt.startswith(node + ".") and node != "":
                return path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    cycles = [c for n in graph if n not in state and (c := visit(n, [n]))]
    assert cycles == []


def test_only_the_seam_and_the_models_ask_a_models_kind():
    kinds = {node.name for path in (SRC / "models").rglob("*.py")
             for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] in ("seam", "models"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & kinds:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []


def test_a_probe_is_its_own_probe():
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    seam = probe(cnn, (1, 8, 8))
    assert probe(seam) is seam and probe(seam, (1, 8, 8)) is seam


def test_discovery_runs_once_per_visualize(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(3 * 3 * 3, 4))
    calls = []
    discover = featvis.seam.module.discover
    monkeypatch.setattr(featvis.seam.module, "discover",
                        lambda *a, **k: calls.append(1) or discover(*a, **k))
    images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    summary = visualize(cnn, images, tmp_path / "run", VisualizeSettings(
        units=2, k=2, steps=3, restarts=1, top=2), progress=False, gallery=False)
    assert {"examples", "maximize", "deconvnet", "combination"} <= \
        set(summary["layers"][0]["methods"])
    assert len(calls) == 1
