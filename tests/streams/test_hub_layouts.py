"""Online tasks read from their hub dataset's real layout: the repo's configs, split names and
columns, as parquet in a local folder named like the hub repo. ``datasets.load_dataset(repo,
config)`` resolves such a folder itself, so each task goes through exactly the code path its hub
name takes (no network, nothing replaced). Each case pins the text one row becomes and the
label name its label index means."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import sources
from streams.sources import TASKS, load_raw

#: task -> (hub repo, config, {hub split: rows}, expected text of the first train row)
#: rows hold the hub's real columns; labels cycle over every class
CASES = {
    "yelp": (
        "Yelp/yelp_review_full",
        None,
        lambda i, s: {"label": i % 5, "text": f"Great tacos<br />and salsa {s}{i}"},
        "Great tacos and salsa train0",
        ("train", "test"),
    ),
    "amazon": (
        "mteb/AmazonReviewsClassification",
        "en",
        lambda i, s: {"id": f"en_{i}", "text": f"Broke after a week {s}{i}", "label": i % 5, "label_text": str(i % 5)},
        "Broke after a week train0",
        ("train", "validation", "test"),
    ),
    "dbpedia": (
        "fancyzhx/dbpedia_14",
        None,
        lambda i, s: {"label": i % 14, "title": f"Acme {s}{i}", "content": " Acme is a company."},
        "title: Acme train0 content: Acme is a company.",
        ("train", "test"),
    ),
    "cb": (
        "aps/super_glue",
        "cb",
        lambda i, s: {"premise": f"It rained {s}{i}.", "hypothesis": "It was wet.", "idx": i, "label": i % 3},
        "premise: It rained train0. hypothesis: It was wet.",
        ("train", "validation", "test"),
    ),
    "wic": (
        "aps/super_glue",
        "wic",
        lambda i, s: {
            "word": "bank",
            "sentence1": f"A river bank {s}{i}.",
            "sentence2": "A savings bank.",
            "start1": 8,
            "start2": 10,
            "end1": 12,
            "end2": 14,
            "idx": i,
            "label": i % 2,
        },
        "word: bank sentence1: A river bank train0. sentence2: A savings bank.",
        ("train", "validation", "test"),
    ),
    "copa": (
        "aps/super_glue",
        "copa",
        lambda i, s: {
            "premise": f"The glass fell {s}{i}.",
            "choice1": "It broke.",
            "choice2": "It sang.",
            "question": "effect" if i % 2 == 0 else "cause",
            "idx": i,
            "label": i % 2,
        },
        "premise: The glass fell train0. What happened as a result? first: It broke. second: It sang.",
        ("train", "validation", "test"),
    ),
    "qqp": (
        "nyu-mll/glue",
        "qqp",
        lambda i, s: {"question1": f"How to cook rice {s}{i}?", "question2": "Rice cooking?", "label": i % 2, "idx": i},
        "question1: How to cook rice train0? question2: Rice cooking?",
        ("train", "validation", "test"),
    ),
    "boolq": (
        "aps/super_glue",
        "boolq",
        lambda i, s: {"question": "is the sky blue", "passage": f"The sky is blue {s}{i}.", "idx": i, "label": i % 2},
        "passage: The sky is blue train0. question: is the sky blue",
        ("train", "validation", "test"),
    ),
    "imdb": (
        "stanfordnlp/imdb",
        None,
        lambda i, s: {"text": f"A fine film.<br /><br />Loved it {s}{i}", "label": i % 2},
        "A fine film. Loved it train0",
        ("train", "test", "unsupervised"),
    ),
    "sst2": (
        "nyu-mll/glue",
        "sst2",
        lambda i, s: {"sentence": f"a gripping story {s}{i}", "label": i % 2, "idx": i},
        "a gripping story train0",
        ("train", "validation", "test"),
    ),
    "multirc": (
        "aps/super_glue",
        "multirc",
        lambda i, s: {
            "paragraph": f"Sam went home {s}{i}.",
            "question": "Where did Sam go?",
            "answer": "home",
            "idx": {"paragraph": 0, "question": 0, "answer": i},
            "label": i % 2,
        },
        "paragraph: Sam went home train0. question: Where did Sam go? answer: home",
        ("train", "validation", "test"),
    ),
}


def _write_hub_folder(root: Path, repo: str, config: str | None, row, splits: tuple[str, ...], n: int) -> None:
    unlabelled = {"unsupervised"} | ({"test"} if repo in ("nyu-mll/glue", "aps/super_glue") else set())
    """The repo's parquet layout and its README ``configs`` block, as the hub serves it."""
    import datasets

    folder, name = root / repo, config or "default"
    entries = []
    for split in splits:
        rows = [row(i, split) for i in range(n)]
        if split in unlabelled:
            rows = [{**r, "label": -1} for r in rows]
        path = folder / name / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows).to_parquet(str(path))
        entries.append(f"  - split: {split}\n    path: {name}/{split}-*.parquet")
    readme = folder / "README.md"
    configs = readme.read_text().split("---")[1] if readme.exists() else "\nconfigs:\n"
    configs += f"- config_name: {name}\n  data_files:\n" + "\n".join(entries) + "\n"
    readme.write_text(f"---{configs}---\n")


@pytest.fixture
def hub_folder(tmp_path, monkeypatch, request):
    """An empty working directory where hub repo folders are written, with a private datasets cache."""
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROMPTBANK_CACHE", str(tmp_path / "pbcache"))
    monkeypatch.delenv("PROMPTBANK_LOCAL_DATA", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    sources.clear_cache()
    request.addfinalizer(sources.clear_cache)
    return tmp_path


def test_every_online_task_has_a_layout_case():
    online = {n for n, s in TASKS.items() if s.online}
    tested_elsewhere = {"agnews", "rte", "yahoo", "mnli"}  # test_sources.py
    assert online - tested_elsewhere == set(CASES)


@pytest.mark.parametrize("task", sorted(CASES))
def test_online_task_reads_its_hub_layout(task, hub_folder):
    repo, config, row, first_text, splits = CASES[task]
    source = TASKS[task]
    assert (source.hub.path, source.hub.config) == (repo, config)
    n_labels = len(source.label_names)
    _write_hub_folder(hub_folder, repo, config, row, splits, n=2 * n_labels)
    raw = load_raw(task)
    n = 2 * n_labels  # rows per split; GLUE/SuperGLUE test and IMDB unsupervised rows are unlabelled
    assert raw.texts[0] == first_text
    assert raw.labels == [i % n_labels for i in range(n)] * 2  # our train, then our test split
    assert raw.split == ["train"] * n + ["test"] * n  # from the hub split our "test" names
    assert f"{source.hub.splits['test']}0" in raw.texts[n]
