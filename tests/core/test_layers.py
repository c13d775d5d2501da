"""Layers point one way: the library never loads the experiment layer, Avalanche, MLflow or Ray on import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import promptbank

FORBIDDEN = {"streams", "avalanche", "mlflow", "ray"}


def test_importing_the_library_loads_no_experiment_layer():
    code = (
        "import sys, promptbank, promptbank.cli, promptbank.routing, promptbank.bank, promptbank.storage, "
        "promptbank.serving, promptbank.serving.ray_serve, promptbank.distributed; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_no_library_module_imports_the_experiment_layer():
    """``streams`` and Avalanche not even inside a function (the library must work where they are not
    installed); MLflow only inside the functions that log, load or define a bank as an MLflow model;
    Ray (an optional extra) only inside the functions that use it."""
    offenders = []
    root = Path(promptbank.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                only_in_functions = top in {"mlflow", "ray", "starlette"}
                if top in {"streams", "avalanche"} or (only_in_functions and id(node) in top_level):
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert offenders == []


def test_the_library_and_its_command_line_import_without_transformers():
    """transformers is imported where a model is loaded or text generated, not on ``import
    promptbank``: it tripled the import, so ``promptbank --help`` and ``info`` waited on it."""
    code = "import sys, promptbank, promptbank.cli; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
