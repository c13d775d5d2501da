"""Which learning rate should each module kind default to at the stream budget?

``promptbank.trainer.DEFAULT_LR`` gives the weight kinds the papers' settings scaled to 80 steps;
this study trains each kind at its default and at multiples of it on a few ``offline-5`` tasks
(the runner's budgets and data draw: ``promptbank run --tasks ... --method KIND --lr LR``) and
reports the module alone on validation (what a default should be chosen by) and on test.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/kind_lr.py --kinds vera,dept \\
        --factors 1,3,10 --out runs/studies/kind-lr.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from promptbank.trainer import DEFAULT_LR  # noqa: E402


def train_once(kind: str, lr: float, tasks: str, seed: int, out: Path) -> dict[str, Any]:
    """One ``promptbank run`` of ``kind`` at ``lr`` on ``tasks``; its results.json."""
    cmd = [
        str(ROOT / ".venv/bin/promptbank"), "run", "--tasks", tasks, "--method", kind, "--lr", f"{lr:g}",
        "--seed", str(seed), "--out", str(out), "--quiet", "--fresh",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="vera,dept")
    parser.add_argument("--factors", default="1,3,10", help="multiples of each kind's default learning rate")
    parser.add_argument("--tasks", default="trec,rotten_tomatoes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/studies/kind-lr.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for factor in (float(f) for f in args.factors.split(",")):
                lr = float(f"{DEFAULT_LR[kind] * factor:.6g}")
                started = time.perf_counter()
                r = train_once(kind, lr, args.tasks, args.seed, Path(tmp) / f"{kind}-{factor:g}")
                row = {
                    "kind": kind,
                    "lr": lr,
                    "factor": factor,
                    "tasks": r["tasks"],
                    "best_val_acc": [rep["best_val_acc"] for rep in r["reports"]],
                    "module_alone_acc": r["module_alone_acc"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
