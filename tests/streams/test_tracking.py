"""The embedded MLflow store: several stream runs may open one new store at the same moment."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mlflow.tracking import MlflowClient

from streams.tracking import DEFAULT_EXPERIMENT, Tracker, default_tracking_uri


def _open_store(root: str, barrier, results) -> None:
    barrier.wait()  # every process opens the store at once
    try:
        results.put(("ok", Tracker(root=root).experiment_id))
    except Exception as exc:  # reported to the test, which names it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_runs_that_open_a_new_store_at_once_all_start_and_share_one_experiment(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(str(tmp_path), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o for o in outcomes if o[0] == "error"] == []
    assert len({o[1] for o in outcomes}) == 1
    client = MlflowClient(default_tracking_uri(tmp_path))
    assert [e.name for e in client.search_experiments() if e.name == DEFAULT_EXPERIMENT] == [DEFAULT_EXPERIMENT]
