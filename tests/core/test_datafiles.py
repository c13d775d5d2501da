"""Tasks from data files and datasets: every format, column choices, one clear error per bad file;
the ``add`` / ``remove`` commands on a bank folder."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from promptbank.bank import PromptBank
from promptbank.cli import main
from promptbank.datafiles import load_examples
from promptbank.errors import HubUnavailableError, InvalidDataError

ROWS = [
    {"text": "the cat sat on the mat", "title": "cats", "label": "cat"},
    {"text": "a dog barked loudly", "title": "dogs", "label": "dog"},
    {"text": "my cat purrs", "title": "", "label": "cat"},
    {"text": "the dog runs fast", "title": "dogs", "label": "dog"},
] * 4


def _write(path: Path, rows: list[dict]) -> Path:
    frame = datasets.Dataset.from_list(rows)
    {".csv": frame.to_csv, ".jsonl": frame.to_json, ".parquet": frame.to_parquet}[path.suffix](str(path))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_every_format_reads_the_same_examples(tmp_path: Path, suffix: str):
    if suffix == ".tsv":
        path = tmp_path / "data.tsv"
        path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS))
    else:
        path = _write(tmp_path / f"data{suffix}", ROWS)
    examples = load_examples(path)
    assert examples.texts == [r["text"] for r in ROWS] and examples.labels == [r["label"] for r in ROWS]


def test_several_text_columns_are_joined_and_class_labels_give_their_names():
    features = datasets.Features(
        {
            "title": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["cat", "dog"]),
        }
    )
    rows = [{**r, "label": ["cat", "dog"].index(r["label"])} for r in ROWS]
    split = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features)})
    examples = load_examples(split, text_columns=["title", "text"])
    assert examples.texts[:3] == [
        "title: cats text: the cat sat on the mat",
        "title: dogs text: a dog barked loudly",
        "text: my cat purrs",
    ]
    assert examples.labels[:2] == ["cat", "dog"]
    with pytest.raises(InvalidDataError, match="no split 'test'"):
        load_examples(split, split="test")


def test_bad_files_get_one_clear_error(tmp_path: Path, monkeypatch):
    good = _write(tmp_path / "data.csv", ROWS)
    with pytest.raises(InvalidDataError, match=r"no column 'body'.*--text-column"):
        load_examples(good, text_columns=["body"])
    bad_files = {  # file name, bytes, what the error says
        "empty.csv": (b"", "an empty file"),
        "blank.csv": (b"text,label\n,cat\nhello,\n", "no row has both a text and a label"),
        "latin.csv": ("text,label\ncaf\xe9 au lait,drink\n".encode("latin-1"), "latin.csv.*UTF-8"),
        "data.txt": (b"x", "must all be one of"),
    }
    for name, (content, message) in bad_files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidDataError, match=message):
            load_examples(tmp_path / name)
    monkeypatch.setattr("promptbank.datafiles.hub_reachable", lambda: False)
    with pytest.raises(HubUnavailableError, match="not a local file"):
        load_examples("someone/some-dataset")


def test_add_creates_the_bank_then_adds_and_remove_drops(tiny_folder: str, tmp_path: Path, capsys):
    data = _write(tmp_path / "animals.jsonl", ROWS)
    bank_dir = tmp_path / "bank"
    common = ["--bank", str(bank_dir), "--backbone", tiny_folder]
    options = ["--steps", "2", "--batch-size", "4", "--n-tokens", "4", "--key-encoder", "embedding-mean"]
    assert main(["add", *common, "--name", "animals", "--data", str(data), *options]) == 0
    assert "added 'animals'" in capsys.readouterr().out
    weather = _write(
        tmp_path / "weather.csv",
        [
            {"text": t, "label": lab}
            for t, lab in zip(
                ["heavy rain today", "sunny and warm", "rain again tonight", "bright sun outside"] * 4,
                ["rain", "sun"] * 8,
            )
        ],
    )
    kind = ["--method", "lora", "--options", '{"rank": 2}']  # this task's own module kind
    assert main(["add", *common, "--name", "weather", "--data", str(weather), "--steps", "2", *kind]) == 0
    bank = PromptBank.load(bank_dir, backbone=tiny_folder)
    assert bank.tasks == ["animals", "weather"] and bank.config.n_tokens == 4
    assert [bank.task_info(n).module["method"] for n in bank.tasks] == ["ulpt", "lora"]
    assert bank.task_info("weather").module["rank"] == 2
    capsys.readouterr()
    assert main(["info", str(bank_dir)]) == 0
    lora_bytes = 2 * sum(v.numel() for v in bank.prompt_state("weather").values())  # float16
    assert f"lora {lora_bytes}" in capsys.readouterr().out
    assert main(["add", *common, "--name", "y", "--data", str(data), "--method", "lora", "--options", "rank=2"]) == 2
    assert "--options must be a JSON object" in capsys.readouterr().err
    assert bank.task_info("animals").label_names == ["cat", "dog"]
    assert bank.task_info("animals").metadata["n_train"] == len(ROWS) - int(len(ROWS) * 0.1)
    assert main(["remove", *common, "animals"]) == 0
    assert PromptBank.load(bank_dir, backbone=tiny_folder).tasks == ["weather"]
    assert main(["add", *common, "--name", "x", "--data", str(data), "--label-column", "kind"]) == 2
    assert "no column 'kind'" in capsys.readouterr().err
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    assert [t["name"] for t in manifest["tasks"]] == ["weather"]  # a failed add leaves the bank as it was

    other = ["--bank", str(tmp_path / "other"), "--backbone", tiny_folder]
    assert main(["add", *other, "--name", "animals", "--data", str(data), *options]) == 0
    merged = tmp_path / "merged"
    assert main(["merge", str(bank_dir), str(tmp_path / "other"), "--out", str(merged)]) == 0
    assert PromptBank.load(merged, backbone=tiny_folder).tasks == ["weather", "animals"]
    capsys.readouterr()
    assert main(["merge", str(merged), str(tmp_path / "other"), "--out", str(merged)]) == 2
    assert "both banks hold tasks named ['animals']" in capsys.readouterr().err


def test_predict_reads_a_file_and_writes_jsonl_or_csv(tiny_folder: str, tmp_path: Path, capsys):
    import csv

    data = _write(tmp_path / "animals.jsonl", ROWS)
    bank_dir = tmp_path / "bank"
    common = ["--bank", str(bank_dir), "--backbone", tiny_folder]
    tiny = ["--steps", "2", "--batch-size", "4", "--n-tokens", "4", "--key-encoder", "embedding-mean"]
    assert main(["add", *common, "--name", "animals", "--data", str(data), *tiny]) == 0
    expected = PromptBank.load(bank_dir, backbone=tiny_folder).predict([r["text"] for r in ROWS])
    assert main(["predict", *common, "--file", str(data), "--out", str(tmp_path / "out.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["text"], r["label"]) for r in lines] == [(r["text"], p.label) for r, p in zip(ROWS, expected)]
    assert main(["predict", *common, "--file", str(data), "--out", str(tmp_path / "out.csv")]) == 0
    with open(tmp_path / "out.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["label"] for r in table] == [p.label for p in expected]
    assert json.loads(table[0]["scores"]) == lines[0]["scores"]
    capsys.readouterr()
    assert main(["predict", *common, "--file", str(data), "--out", str(tmp_path / "out.txt")]) == 2
    assert "write .jsonl or .csv" in capsys.readouterr().err


def test_a_text_to_text_task_is_added_from_a_file_and_predict_prints_its_generated_answer(
    tiny_folder: str, tmp_path: Path, capsys
):
    data = _write(tmp_path / "titles.jsonl", ROWS)  # text -> title
    common = ["--bank", str(tmp_path / "bank"), "--backbone", tiny_folder]
    tiny = ["--steps", "2", "--batch-size", "4", "--n-tokens", "4", "--key-encoder", "embedding-mean"]
    assert main(["add", *common, "--name", "titles", "--data", str(data), "--target-column", "title", *tiny]) == 0
    assert "text-to-text" in capsys.readouterr().out
    bank = PromptBank.load(tmp_path / "bank", backbone=tiny_folder)
    assert (
        bank.task_info("titles").generates and bank.task_info("titles").metadata["n_train"] == 12 - 1
    )  # "" titles dropped, 10% held out
    expected = bank.predict(["a cat"], generation={"max_new_tokens": 3})[0]
    assert main(["predict", *common, "--max-new-tokens", "3", "a cat"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["task"], row["label"], row["generated"]) == ("titles", None, expected.text) and row["confidence"] < 0
    assert main(["info", str(tmp_path / "bank")]) == 0
    assert "text-to-text" in capsys.readouterr().out
