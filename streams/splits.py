"""Budgeted, stratified train/val/test splits of a task, fixed by a seed.

Small per-class budgets keep a CPU stream affordable and make runs comparable: the same
(task, budgets, seed) gives the same examples on every machine (numpy's PCG64 stream plus
a CRC32 of the task name, never Python's salted ``hash``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from promptbank.errors import InvalidDataError

from .sources import DataFiles, get_source, load_raw

SPLIT_VERSION = 1  # bump if the sampling rule changes (recorded in TaskData.budgets)
#: The stream runner's default ``key_per_class``: labelled training inputs per class whose keys the
#: router learns from, of which the prompt trains on the first ``train_per_class``. More keys per
#: class route better at no routing-state cost (docs/routing.md); 1,024
#: against 256 took offline-9's routed-vs-oracle gap from 1.1 to 0.8 pt for 100 s more key encoding.
KEY_PER_CLASS = 1024


@dataclass
class DataConfig:
    """Per-class budgets of a task's splits: the one place their defaults live.

    Args:
        train_per_class: training examples per class the prompt learns from.
        val_per_class: validation examples per class (checkpoint choice).
        key_per_class: labelled training inputs per class the router learns from; the prompt
            trains on the first ``train_per_class`` of them.
        test_per_class: test examples per class.
        list_labels: tell the model its options: the template's closing cue lists the label
            words ("Topic:" becomes "Topic (business, entertainment, ...):"; ``with_label_list``).
    """

    train_per_class: int = 64
    val_per_class: int = 16
    key_per_class: int = KEY_PER_CLASS
    test_per_class: int = 100
    list_labels: bool = False


def with_label_list(template: str, label_names: Sequence[str]) -> str:
    """``template`` with its label words listed before its closing ``:`` or ``?`` (or at its end).

    Example:
        >>> with_label_list("Article: {text}\nTopic:", ["business", "sport"])
        'Article: {text}\nTopic (business, sport):'
    """
    options = f" ({', '.join(label_names)})"
    if template.endswith((":", "?")):
        return template[:-1] + options + template[-1]
    return template + options


@dataclass
class TaskData:
    """A task ready to train on: verbaliser, template and the three budgeted splits, plus
    (``key_per_class`` > ``train_per_class``) more labelled training inputs for the router only."""

    name: str
    label_names: tuple[str, ...]
    template: str
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    budgets: dict = field(default_factory=dict)
    key_texts: list[str] = field(default_factory=list)
    key_labels: list[int] = field(default_factory=list)
    train_targets: list[str] = field(default_factory=list)  # a text-to-text task's answers (its labels are all 0)
    val_targets: list[str] = field(default_factory=list)
    test_targets: list[str] = field(default_factory=list)

    @property
    def generates(self) -> bool:
        """A text-to-text task: no label names, generated answers scored against ``*_targets``."""
        return not self.label_names


def _allocate(n: int, wanted: list[int]) -> list[int]:
    """Split ``n`` examples over budgets ``wanted``: full budgets if there are enough,
    else proportional shares (largest remainder), each at least 1."""
    if n >= sum(wanted):
        return list(wanted)
    shares = [n * w / sum(wanted) for w in wanted]
    counts = [max(1, int(s)) for s in shares]
    while sum(counts) > n:  # the max(1, .) floors can overshoot; take from the largest
        counts[counts.index(max(counts))] -= 1
    order = sorted(range(len(wanted)), key=lambda i: (int(shares[i]) - shares[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _too_few(name: str, label: str, n: int, need: int, pool: str) -> InvalidDataError:
    return InvalidDataError(
        f"task {name!r}: class {label!r} has {n} {pool} example(s), needs at least {need} "
        "(one per split). Fix: pick another task or check the data files."
    )


def get_task(
    name: str,
    train_per_class: int = DataConfig.train_per_class,
    val_per_class: int = DataConfig.val_per_class,
    test_per_class: int = DataConfig.test_per_class,
    seed: int = 0,
    data_files: DataFiles | None = None,
    key_per_class: int = 0,
) -> TaskData:
    """Sample disjoint train/val/test sets of up to the given sizes per class.

    ``key_per_class`` above ``train_per_class`` adds up to the difference per class of further
    training inputs (``key_texts``), disjoint from the splits, which leave them unchanged: the
    router learns from them and the prompt does not train on them (keys are cheap and the
    routing state does not grow with them; docs/routing.md).

    Where the raw data has an official test split (20newsgroups, reuters_r8, most hub
    datasets) test comes from it and train/val from the official train part. A class short
    of its budgets is shared proportionally between the splits; the counts actually drawn
    are recorded in ``budgets``.
    """
    for key, value in (
        ("train_per_class", train_per_class),
        ("val_per_class", val_per_class),
        ("test_per_class", test_per_class),
    ):
        if int(value) < 1:
            raise InvalidDataError(f"{key} must be >= 1, got {value}")
    if int(key_per_class) < 0:
        raise InvalidDataError(f"key_per_class must be >= 0, got {key_per_class}")
    source = get_source(name)
    raw = load_raw(name, data_files=data_files)
    labels = np.asarray(raw.labels, dtype=np.int64)
    official = raw.split is not None
    is_test = np.asarray([s == "test" for s in raw.split]) if official else np.zeros(len(labels), bool)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])

    extra = max(0, int(key_per_class) - int(train_per_class))
    picked: dict[str, list[int]] = {"train": [], "val": [], "test": [], "key": []}
    counts: dict[str, list[int]] = {"train": [], "val": [], "test": [], "key": []}
    # a text-to-text task is one class: its budgets are per task
    for c, label in enumerate(source.label_names or ("(answers)",)):
        if official:
            test_pool = rng.permutation(np.flatnonzero((labels == c) & is_test))
            pool = rng.permutation(np.flatnonzero((labels == c) & ~is_test))
            if len(test_pool) < 1:
                raise _too_few(name, label, 0, 1, "official test")
            if len(pool) < 2:
                raise _too_few(name, label, len(pool), 2, "official train")
            n_test = min(test_per_class, len(test_pool))
            n_val, n_train = _allocate(len(pool), [val_per_class, train_per_class])
            test = test_pool[:n_test]
        else:
            pool = rng.permutation(np.flatnonzero(labels == c))
            if len(pool) < 3:
                raise _too_few(name, label, len(pool), 3, "")
            # Test is drawn first, so changing the train budget never changes the test set.
            n_test, n_val, n_train = _allocate(len(pool), [test_per_class, val_per_class, train_per_class])
            test, pool = pool[:n_test], pool[n_test:]
        splits = {
            "test": test,
            "val": pool[:n_val],
            "train": pool[n_val : n_val + n_train],
            "key": pool[n_val + n_train : n_val + n_train + extra],
        }
        for split, idx in splits.items():
            picked[split].extend(int(i) for i in idx)
            counts[split].append(len(idx))

    out: dict[str, tuple[list[str], list[int], list[str]]] = {}
    for k, (split, idx) in enumerate(picked.items()):
        # Interleave the classes; one stream per split so the test order never depends on
        # the train budget (the key split comes last, so it changes none of the others).
        split_rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8")), k + 1])
        order = split_rng.permutation(np.asarray(idx, dtype=np.int64))
        targets = [raw.targets[i] for i in order] if raw.targets is not None else []
        out[split] = ([raw.texts[i] for i in order], [int(labels[i]) for i in order], targets)
    return TaskData(
        name=name,
        label_names=source.label_names,
        template=source.template,
        train_texts=out["train"][0],
        train_labels=out["train"][1],
        val_texts=out["val"][0],
        val_labels=out["val"][1],
        test_texts=out["test"][0],
        test_labels=out["test"][1],
        budgets={
            "train_per_class": int(train_per_class),
            "val_per_class": int(val_per_class),
            "test_per_class": int(test_per_class),
            "seed": int(seed),
            "test_source": "official" if official else "sampled",
            "raw_size": len(labels),
            "train_counts": counts["train"],
            "val_counts": counts["val"],
            "test_counts": counts["test"],
            "split_version": SPLIT_VERSION,
            "key_per_class": int(key_per_class),  # the prompt cache ignores the key_ entries
            "key_counts": counts["key"],
        },
        key_texts=out["key"][0],
        key_labels=out["key"][1],
        train_targets=out["train"][2],
        val_targets=out["val"][2],
        test_targets=out["test"][2],
    )
