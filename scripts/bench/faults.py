"""How many banks are lost to real kills and concurrent saves? (Fault injection at the storage level.)

    .venv/bin/python scripts/bench/faults.py --kills 40 --seconds 20 --out runs/bench/faults.json

Part 1 kills (SIGKILL) a process at a random moment while it saves a bank over and over, then loads
the bank. Part 2 runs several writer and reader processes against one bank directory at once; every
read must return one save's manifest and files. Both count the banks that no longer load.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench

WORKER = """
import json, sys, time
import numpy as np, torch
from pathlib import Path
from promptbank import storage

role, who, path, seconds = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
manifest = {"backbone": {"name": "x"}, "key_encoder": {"name": "k"}, "config": {}, "prompt_config": {"method": "ulpt"},
            "router": {"strategy": "lda", "tasks": [[0, 1]]}, "next_task_id": 1,
            "tasks": [{"name": "t", "task_id": 0, "label_names": ["a", "b"], "template": "{text}", "metadata": {"v": 0.0}}]}
print("ready", flush=True)
while seconds > 0 and not (path.parent / "go").exists():
    time.sleep(0.01)
done, failures, deadline = 0, [], time.monotonic() + (seconds if seconds > 0 else 1e9)
while time.monotonic() < deadline:
    try:
        if role == "writer":
            v = float(who * 1000000 + done)
            task = {**manifest["tasks"][0], "metadata": {"v": v}}
            storage.write_bank(path, {**manifest, "tasks": [task]}, {"task0.z": torch.full((256, 64), v)},
                               {"comp_mean": np.full(4096, v)})
        else:
            m, tensors, arrays = storage.read_bank(path)
            v = m["tasks"][0]["metadata"]["v"]
            assert float(tensors["task0.z"][0, 0]) == v and float(arrays["comp_mean"][0]) == v, "mixed saves"
        done += 1
    except Exception as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"role": role, "done": done, "n_failures": len(failures), "failures": failures[:3]}), flush=True)
"""


def loads(path: Path) -> bool:
    from promptbank import storage
    from promptbank.errors import PromptBankError

    try:
        storage.read_bank(path)
        return True
    except PromptBankError:
        return False


def kill_during_saves(worker: Path, root: Path, rounds: int, seed: int) -> dict:
    """SIGKILL a saving process at a random moment, ``rounds`` times; count banks that no longer load."""
    rng = random.Random(seed)
    path = root / "killed"
    lost = 0
    for _ in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, str(worker), "writer", "1", str(path), "0"], stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # imports done
        time.sleep(rng.uniform(0.05, 0.6))  # first save or any later one
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists() and (path / "manifest.json").exists():
            lost += not loads(path)
    return {"rounds": rounds, "banks_lost": lost, "temp_files_left": len(list(path.glob(".*.tmp")))}


def concurrent(worker: Path, root: Path, writers: int, readers: int, seconds: float) -> dict:
    """Writers and readers on one directory at once; count failed reads and whether the bank loads after."""
    path = root / "shared"
    seed = subprocess.Popen(
        [sys.executable, str(worker), "writer", "0", str(path), "-1"], stdout=subprocess.PIPE, text=True
    )
    seed.stdout.readline()
    while not (path / "manifest.json").exists():
        time.sleep(0.05)
    seed.kill()
    seed.wait()
    roles = ["writer"] * writers + ["reader"] * readers
    procs = [subprocess.Popen([sys.executable, str(worker), r, str(i + 1), str(path), str(seconds)], stdout=subprocess.PIPE,
                              text=True) for i, r in enumerate(roles)]  # fmt: skip
    for p in procs:
        p.stdout.readline()
    (root / "go").touch()
    reports = [json.loads(p.communicate(timeout=seconds + 300)[0].strip().splitlines()[-1]) for p in procs]
    by = {r: [x for x in reports if x["role"] == r] for r in ("writer", "reader")}
    return {
        "writers": writers, "readers": readers, "seconds": seconds,
        "saves": sum(x["done"] for x in by["writer"]), "save_failures": sum(x["n_failures"] for x in by["writer"]),
        "reads": sum(x["done"] for x in by["reader"]), "read_failures": sum(x["n_failures"] for x in by["reader"]),
        "examples": [f for x in reports for f in x["failures"]][:5], "bank_loads_after": loads(path),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _bench.add_common_args(parser, "runs/bench/faults.json")
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs during saves")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the concurrent part")
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    machine = _bench.machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        worker = root / "worker.py"
        worker.write_text(WORKER)
        killed = kill_during_saves(worker, root, args.kills, args.seed)
        _bench.log(f"kill -9 during saves: {killed}")
        shared = concurrent(worker, root, args.writers, args.readers, args.seconds)
        _bench.log(f"concurrent: {shared}")
    _bench.write_json(args.out, {"bench": "faults", "args": vars(args), "machine": machine, "kill_during_saves": killed,
                                 "concurrent": shared})  # fmt: skip
    _bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
