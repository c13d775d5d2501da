"""Synthetic data shared by the tests: clustered task keys, and routing comparisons."""

from __future__ import annotations

import numpy as np

from promptbank.routing import Router, Routing, make_router
from promptbank.trainer import TrainConfig

DIM = 384
N_TASKS = 5


def clustered(n_tasks: int = N_TASKS, n: int = 60, dim: int = DIM, seed: int = 0):
    """Per task: two classes around a task centre, anisotropic noise, unit-norm keys.

    Returns:
        (train, queries, truth): per task a (keys, labels) pair; test keys of every task
        stacked; each test key's task id.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for _ in range(n_tasks):
        centre = rng.normal(size=dim)
        classes = centre + 0.5 * rng.normal(size=(2, dim))
        scale = rng.uniform(0.2, 1.0, size=dim)
        for split in (train, test):
            labels = rng.integers(0, 2, size=n)
            x = classes[labels] + rng.normal(size=(n, dim)) * scale
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            split.append((x.astype(np.float32), labels))
    queries = np.concatenate([x for x, _ in test])
    truth = np.repeat(np.arange(n_tasks), n)
    return train, queries, truth


def random_directions(n: int, dim: int = DIM, seed: int = 7) -> np.ndarray:
    """Unit vectors in random directions: inputs of no known task."""
    far = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return far / np.linalg.norm(far, axis=1, keepdims=True)


def build_router(strategy: str, train, **options) -> Router:
    """A router of ``strategy`` holding every task of ``train`` (task id = position)."""
    router = make_router(strategy, dim=train[0][0].shape[1], **options)
    for t, (keys, labels) in enumerate(train):
        router.add_task(t, keys, labels)
    return router


def same_routing(a: Routing, b: Routing) -> bool:
    """Whether two routings agree exactly, field by field."""
    fields = ("task_ids", "scores", "candidates", "candidate_scores", "closeness")
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


# two tiny classification tasks for banks on the tiny random Llama
FAST = TrainConfig(steps=4, batch_size=4, eval_every=2, progress=False)
ANIMALS = (
    ["the cat sat on the mat", "a dog barked loudly", "my cat purrs", "the dog runs fast"] * 3,
    ["cat", "dog", "cat", "dog"] * 3,
)
WEATHER = (
    ["heavy rain today", "sunny and warm", "rain again tonight", "bright sun outside"] * 3,
    ["rain", "sun", "rain", "sun"] * 3,
)


# a stream run of a few seconds on the tiny random Llama (saved as a folder by the tiny_folder fixture)
TASKS = ["sms_spam", "trec"]


def tiny_run_config(backbone: str):
    """Two real offline tasks at tiny budgets, keys from the LLM's embeddings (no MiniLM): a stream
    run of a few seconds (a ``RunConfig``)."""
    from promptbank.bank import BankConfig
    from streams.config import RunConfig
    from streams.splits import DataConfig

    return RunConfig(
        stream="custom",
        tasks=TASKS,
        backbone=backbone,
        train=TrainConfig(steps=2, eval_every=1, batch_size=4),
        data=DataConfig(train_per_class=4, val_per_class=2, test_per_class=3, key_per_class=8),
        bank=BankConfig(max_input_tokens=16, n_tokens=4, key_encoder="embedding-mean"),
    )


#: ``promptbank run`` options for a run of a few seconds on the tiny random Llama.
TINY_RUN = (
    "--steps 2 --eval-every 1 --batch-size 4 --train-per-class 4 --val-per-class 2 --test-per-class 3 "
    "--key-per-class 8 --max-input-tokens 16 --n-tokens 4 --key-encoder embedding-mean --quiet"
).split()


def free_port() -> int:
    """A TCP port nobody listens on now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, server, log_path, seconds: float = 180) -> None:
    """Wait until ``url`` answers 200, failing with the server's log if it exits or takes too long."""
    import time
    import urllib.request

    import pytest

    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server behind {url} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)
