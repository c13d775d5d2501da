"""A stream run killed at any write point resumes to the results of an uninterrupted run.

The runner's state (prompt cache, bank files and manifest, cached answers, progress, results)
is written only through atomic renames, so "killed at any instruction" means killed between
two renames. Each rename of a run is a kill point here, chosen by its position, not by timing.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from helpers import tiny_run_config

from streams.runner import run_stream

COMPARED = ("tasks", "acc_matrix", "oracle_matrix", "avg_acc", "oracle_avg_acc", "routing_acc", "routing_acc_per_task",
            "routing_confusion", "bwt", "forgetting", "trainable_params_per_task")  # fmt: skip


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in the code under test catches it."""


def writes_of_a_run(cfg, out, monkeypatch) -> list[str]:
    """The file each atomic rename of a whole run writes, in order."""
    seen, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: seen.append(os.path.basename(dst)) or real(src, dst))
    run_stream(cfg, out=out, progress=False)
    monkeypatch.setattr(os, "replace", real)
    return seen


def test_a_kill_at_every_write_point_resumes_to_the_same_results(tiny_folder, tmp_path, monkeypatch):
    cfg = tiny_run_config(tiny_folder)
    cfg.bank = dataclasses.replace(cfg.bank, key_encoder="embedding-set-mean")  # no MiniLM load per run
    monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "cache-warm"))
    run_stream(cfg, out=tmp_path / "warm", progress=False)  # task data is then read from the in-process cache, as below
    monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "cache-ref"))
    points = writes_of_a_run(cfg, tmp_path / "ref", monkeypatch)
    reference = run_stream(cfg, out=tmp_path / "ref", progress=False)  # finished: a rerun only reports
    assert {"progress.json", "module_answers.json", "manifest.json", "results.json"} <= set(points)
    assert any(p.endswith(".safetensors") for p in points)

    real = os.replace
    for k, target in enumerate(points):
        out = tmp_path / f"kill-{k}"
        monkeypatch.setenv(
            "PROMPTBANK_CACHE", str(tmp_path / f"cache-{k}")
        )  # cold: the cache writes are kill points too
        calls = iter(range(len(points)))

        def replace(src, dst, k=k, calls=calls):
            if next(calls) == k:
                raise Killed(f"killed before writing {os.path.basename(dst)}")
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            run_stream(cfg, out=out, progress=False)
        monkeypatch.setattr(os, "replace", real)
        resumed = run_stream(cfg, out=out, progress=False)
        for key in COMPARED:
            assert resumed[key] == reference[key], f"kill before write {k} ({target}): {key} differs"
        assert not list(out.rglob(".*.tmp")), f"kill before write {k} ({target}) left temp files"
