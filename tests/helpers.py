"""Synthetic data shared by the tests: clustered task keys, and routing comparisons."""

from __future__ import annotations

import numpy as np

from promptbank.routing import Router, Routing, make_router

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
