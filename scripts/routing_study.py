"""Which routing strategy identifies the task best on the same MiniLM keys?

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python scripts/routing_study.py \
        --streams offline-9,vader-4,split-20ng --out runs/routing_study.json

Per stream: tasks are loaded with the stream runner's default budgets (64 train / 16 val /
100 test per class, seed 0), train and test texts are encoded once with MiniLM (cached as
.npy under runs/keys_cache/), tasks are added to each router in stream order with their
train keys and class labels (exactly what ``PromptBank.add_task`` gives the router), and
every test input is routed on its own. Reported: routing accuracy overall and per task,
top-2/top-3 candidate recall, batched routing time per input, routing state bytes per task,
add and remove times. ``--unknown`` also measures unknown-task detection on offline-9 by
holding tasks out (a closeness threshold set so that <= 5% of known-task inputs are rejected).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promptbank.router import Router, make_router, router_from_state  # noqa: E402
from streams.named import stream_tasks  # noqa: E402
from streams.splits import get_task  # noqa: E402

BUDGETS = {"train_per_class": 64, "val_per_class": 16, "test_per_class": 100, "seed": 0}
CACHE = Path("runs/keys_cache")
KEY_ENCODER = "minilm"

#: name -> (strategy, options). The first two are the k-NN baselines.
STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "knn-10-all": ("knn", {"k": 10, "summary": "all"}),
    "knn-default": ("knn", {}),
    "gaussian": ("gaussian", {}),
    "gaussian-perclass": ("gaussian", {"per_class": True}),
}


def _set_threads() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


# -- keys ------------------------------------------------------------------------------------


class _LazyEncoder:
    """Loads MiniLM only when a key file is missing from the cache."""

    def __init__(self) -> None:
        self._enc = None

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._enc is None:
            from promptbank.keys import make_key_encoder

            self._enc = make_key_encoder(KEY_ENCODER, device="cpu")
        return self._enc.encode(texts, progress=False)


def _cached_keys(encoder: _LazyEncoder, task: str, split: str, texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE / f"{KEY_ENCODER}-{task}-{split}-{digest}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    keys = encoder.encode(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, keys)
    print(f"  encoded {task}/{split}: {len(texts)} texts in {time.perf_counter() - started:.0f} s", flush=True)
    return keys


def load_stream(name: str, order: int | None, encoder: _LazyEncoder) -> list[dict[str, Any]]:
    """Per task of the stream, in order: name, train keys/labels, test keys."""
    tasks = []
    for task_name in stream_tasks(name, order):
        data = get_task(task_name, **BUDGETS)
        tasks.append({
            "name": task_name,
            "train": _cached_keys(encoder, task_name, "train", data.train_texts),
            "labels": np.asarray(data.train_labels, np.int64),
            "test": _cached_keys(encoder, task_name, "test", data.test_texts),
            "test_labels": np.asarray(data.test_labels, np.int64),
        })
    return tasks
