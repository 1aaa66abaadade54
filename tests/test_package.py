"""Importing helpers changes nothing global (no seeds, plotting styles, warning filters, log levels)."""

import json
import subprocess
import sys

from conftest import REPO  # noqa: E402

PROBE = r"""
import json, logging, random, warnings
import numpy as np, torch, matplotlib
def snapshot():
    return {
        "random": random.getstate()[1][:5],
        "numpy": np.random.get_state()[1][:5].tolist(),
        "torch_seed": torch.initial_seed(),
        "torch_dtype": str(torch.get_default_dtype()),
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "rc": {k: str(v) for k, v in matplotlib.rcParams.items()},
        "warnings": [str(f) for f in warnings.filters],
        "root_log": logging.getLogger().level,
    }
before = snapshot()
import helpers
after = snapshot()
print(json.dumps({k: before[k] == after[k] for k in before}))
"""


def test_import_changes_no_global_state():
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    unchanged = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(unchanged.values()), {k for k, same in unchanged.items() if not same}


# The package's shape (issue 17): a small surface, small files, no import circles.

import ast  # noqa: E402
import re  # noqa: E402

HELPERS = REPO / "helpers"
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 200
MAX_PUBLIC_NAMES = 25


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def _imports(name, path, modules):
    """Every helpers module `name` imports, at module level or inside a function (a lazy import
    still makes a circle). Importing a.b.c runs package a.b's __init__ first: counted, except for
    the module's own packages, which Python has initialised before the module runs."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # each package on the way, then the module itself
                candidate = ".".join(parts[:i])
                if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                    found.add(candidate)  # (a module's own packages are initialised before it runs)
    return found


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    circles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_import_circle_check_sees_lazy_imports(tmp_path):
    """The circle check must see imports inside a function (the old generation <-> prompt_embeddings
    circle was one), resolve relative ones, and count the package a module is imported through."""
    module = tmp_path / "helpers" / "generation" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from .validation import check_pipeline\n    from ..studies import grids\n")
    global REPO
    saved = REPO
    try:
        REPO = tmp_path
        edges = _imports("helpers.generation.x", module,
                         {"helpers.generation", "helpers.generation.validation", "helpers.studies"})
    finally:
        REPO = saved
    assert edges == {"helpers.generation.validation", "helpers.studies"}


def test_files_and_classes_stay_small():
    too_long = []
    for name, path in _modules().items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_FILE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


def _notebook_code():
    code = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code.append("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    return "\n".join(code)


def test_public_names_are_few_and_each_used_by_a_notebook():
    import helpers

    code = _notebook_code()
    assert len(helpers.__all__) <= MAX_PUBLIC_NAMES, helpers.__all__
    unused = [n for n in helpers.__all__ if not re.search(rf"\bhelpers\.{n}\b|from helpers import [^\n]*\b{n}\b", code)]
    assert unused == [], f"exported but no notebook uses them: {unused}"
    assert sorted(helpers.__all__) == sorted(n for n in vars(helpers) if not n.startswith("_") and
                                             n not in ("generation", "loading", "studies", "studio",
                                                       "errors", "measuring", "stand_in", "output_folders"))


def test_notebooks_do_not_import_the_repository_tooling():
    assert not re.search(r"^\s*(from|import) tools\b", _notebook_code(), re.M)
