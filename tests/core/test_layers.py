"""Layers point one way: the library never loads the experiment layer, Avalanche or MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import promptbank

FORBIDDEN = {"streams", "avalanche", "mlflow"}


def test_importing_the_library_loads_no_experiment_layer():
    code = (
        "import sys, promptbank, promptbank.cli, promptbank.routing, promptbank.bank, promptbank.storage; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_no_library_module_imports_the_experiment_layer():
    """Not even inside a function: the library must work where streams is not installed."""
    offenders = []
    for path in Path(promptbank.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
