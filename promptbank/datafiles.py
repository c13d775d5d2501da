"""A task's examples from a data file (CSV, TSV, JSON lines, Parquet), a hub dataset, or a
``datasets.Dataset``: the texts (one column, or several joined) and their labels.

Reading is ``datasets``' (no hand-written parsing); every problem is one
:class:`InvalidDataError` naming the file and the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HubUnavailableError, InvalidDataError
from .hub import hub_reachable

#: File suffix -> the ``datasets`` builder that reads it.
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def file_format(files: Sequence[str | Path]) -> tuple[str, dict[str, Any]]:
    """The ``datasets`` builder and its options for local data files of one format.

    Raises:
        InvalidDataError: an unknown suffix, or files of several formats.
    """
    suffixes = {Path(f).suffix.lower() for f in files}
    kinds = {FORMATS.get(s, s) + ("\t" if s == ".tsv" else "") for s in suffixes}  # .json and .jsonl mix
    if len(kinds) != 1 or not suffixes <= set(FORMATS):
        raise InvalidDataError(
            f"data files must all be one of {', '.join(FORMATS)}; got {sorted(suffixes)}. Fix: convert them to one format"
        )
    suffix = suffixes.pop()
    return FORMATS[suffix], {"delimiter": "\t"} if suffix == ".tsv" else {}


@dataclass
class Examples:
    """Texts and their labels (label names as strings), and where they came from."""

    texts: list[str]
    labels: list[str]
    source: str


def load_examples(
    source: str | Path | Any,
    text_columns: Sequence[str] = ("text",),
    label_column: str | None = "label",
    split: str = "train",
) -> Examples:
    """Read a task's labelled examples.

    Args:
        source: a local ``.csv``/``.tsv``/``.json(l)``/``.parquet`` file, a hub dataset name, a
            ``datasets.Dataset``, or a ``datasets.DatasetDict`` (``split`` picks the part).
        text_columns: the column(s) holding the input; several are joined as ``name: value``.
        label_column: the column holding the label (a class label's name is used); None reads
            texts only (``labels`` is then empty).
        split: the split of a hub dataset or ``DatasetDict``.

    Returns:
        :class:`Examples`; rows with an empty text or label are dropped.

    Raises:
        InvalidDataError: unreadable or empty file, a missing column, no usable row.
        HubUnavailableError: a hub name while the hub cannot be reached.
    """
    import datasets  # noqa: PLC0415  (only the commands that read data need it)

    where = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    if isinstance(source, (str, Path)):
        dataset = _read(Path(source) if Path(source).exists() else str(source), split, where)
    elif isinstance(source, datasets.DatasetDict):
        if split not in source:
            raise InvalidDataError(f"the DatasetDict has no split {split!r}; it has {sorted(source)}")
        dataset = source[split]
    elif isinstance(source, datasets.Dataset):
        dataset = source
    else:
        raise InvalidDataError(
            f"cannot read examples from a {where}; pass a file path, a hub name or a datasets.Dataset"
        )
    columns = [*text_columns, *([label_column] if label_column else [])]
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InvalidDataError(
            f"{where}: no column {', '.join(map(repr, missing))}; it has {dataset.column_names}. Fix: name the "
            "text column(s) and the label column (--text-column, --label-column)"
        )
    feature = dataset.features.get(label_column) if label_column else None
    names = getattr(feature, "names", None)
    texts, labels = [], []
    for start in range(0, len(dataset), 4096):  # column batches: much faster than row access
        batch = dataset[start : start + 4096]
        column = batch[label_column] if label_column else ["-"] * len(batch[text_columns[0]])
        for i, label in enumerate(column):
            if len(text_columns) == 1:
                text = str(batch[text_columns[0]][i] or "").strip()
            else:
                text = " ".join(f"{c}: {batch[c][i]}" for c in text_columns if str(batch[c][i] or "").strip())
            if not text or label is None or str(label).strip() == "":
                continue
            texts.append(text)
            if label_column:
                labels.append(names[label] if names is not None and isinstance(label, int) else str(label).strip())
    if not texts:
        raise InvalidDataError(
            f"{where}: no row has {'both a text and a label' if label_column else 'a text'}. Fix: check the file and its columns"
        )
    return Examples(texts, labels, where)


def _read(source: Path | str, split: str, where: str) -> Any:
    import datasets  # noqa: PLC0415

    if isinstance(source, Path):
        if source.is_dir() or source.stat().st_size == 0:
            raise InvalidDataError(f"{where}: {'a folder' if source.is_dir() else 'an empty file'}; pass one data file")
        builder, options = file_format([source])
        try:
            return datasets.load_dataset(builder, data_files=str(source), split="train", **options)
        except Exception as exc:  # datasets wraps parse and decode errors in several types
            cause = exc.__cause__ or exc
            raise InvalidDataError(
                f"{where}: cannot be read as {builder} ({type(cause).__name__}: {str(cause).splitlines()[0][:200]}). "
                "Fix: check its format, and save it as UTF-8"
            ) from None
    if not hub_reachable():
        raise HubUnavailableError(
            f"{where!r} is not a local file and the Hugging Face hub is unreachable. Fix: pass a local "
            ".csv/.jsonl/.parquet file, or connect to the internet"
        )
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as exc:
        raise InvalidDataError(f"cannot load hub dataset {where!r} (split {split!r}): {str(exc)[:200]}") from None
