"""The package's layers, checked: every module imports on its own in a fresh interpreter, the
import graph (function-level imports included) has no cycle, and no module imports a layer
above its own or a sibling package of its own layer."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tasft_ray"

# Lowest first. A module may import its own package and anything in a lower layer.
LAYERS: list[tuple[str, ...]] = [
    (
        "tasft_ray",
        "tasft_ray.errors",
        "tasft_ray.objective",
        "tasft_ray.accelerator",
        "tasft_ray.setting",
        "tasft_ray.stats",
    ),  # fmt: skip
    ("tasft_ray.files", "tasft_ray.config"),
    ("tasft_ray.storage", "tasft_ray.losses", "tasft_ray.worker_env", "tasft_ray.outbox"),
    ("tasft_ray.data", "tasft_ray.cluster", "tasft_ray.models"),
    ("tasft_ray.tracking",),  # names the data sets runs used (data.lineage)
    ("tasft_ray.training", "tasft_ray.judges"),
    ("tasft_ray.inference", "tasft_ray.report", "tasft_ray.doctor"),
    ("tasft_ray.evaluation", "tasft_ray.generation"),
    ("tasft_ray.sweep",),
    ("tasft_ray.cli",),
    ("tasft_ray.tune", "tasft_ray.__main__"),  # entry points into the CLI
]


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    """The layered unit a module belongs to (its top-level package or module)."""
    units = [u for layer in LAYERS for u in layer]
    return max((u for u in units if module == u or module.startswith(u + ".")), key=len)


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _path(module: str) -> Path:
    path = PACKAGE.parent / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """Every tasft_ray module ``module`` imports, anywhere in its file."""
    path = _path(module)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found - {module}


GRAPH = {m: _imports(m) for m in MODULES}


def test_every_module_is_assigned_a_layer():
    for m in MODULES:
        assert _unit(m), m


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n] if n in stack else [m, n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_no_upward_or_sideways_import():
    bad = []
    for m, targets in GRAPH.items():
        mine = _unit(m)
        for n in targets:
            theirs = _unit(n)
            if theirs == mine or n == "tasft_ray":
                continue
            if _layer(theirs) >= _layer(mine):
                bad.append(f"{m} imports {n} (layer {_layer(theirs)} >= {_layer(mine)})")
    assert not bad, "\n".join(bad)


def test_losses_import_neither_ray_nor_io():
    for m in MODULES:
        if _unit(m) != "tasft_ray.losses":
            continue
        tree = ast.parse(_path(m).read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}  # fmt: skip
        roots |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
        assert roots <= {"__future__", "math", "collections", "dataclasses", "functools",
                         "typing", "torch", "tasft_ray"}, (m, roots)  # fmt: skip


def test_each_module_imports_alone_in_a_fresh_interpreter():
    """An import cycle that only bites in some import order shows as a failure here: every
    module is the first tasft_ray module a forked child imports."""
    script = textwrap.dedent(
        """
        import importlib, os, sys, traceback
        # third-party only, imported once before the forks (each child would pay seconds for
        # each): tasft_ray stays unimported
        import numpy, pydantic, torch, yaml, transformers, peft, ray, ray.train, ray.tune, mlflow
        failed = []
        for name in sys.argv[1:]:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(name)
        print("FAILED:" + ",".join(failed))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, *(m for m in MODULES if m != "tasft_ray.__main__")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "FAILED:", proc.stderr[-5000:]


def test_no_module_over_500_lines():
    """Small modules with one job each: a module past 500 lines is two jobs, or should be."""
    long = {m: n for m in MODULES
            if (n := len(_path(m).read_text().splitlines())) > 500}  # fmt: skip
    assert not long, long


def test_one_label_format_for_a_setting():
    """``emd λ=4 n=100 seed=0`` is spelled by tasft_ray.setting alone."""
    import re

    spelled = [m for m in MODULES if m != "tasft_ray.setting"
               and re.search(r"λ=\{", _path(m).read_text())]  # fmt: skip
    assert not spelled, spelled
