"""Tasks trained in parallel on a local 2-CPU Ray instance (``local_ray``) merge into the bank a sequential run
builds; the ``train-many`` command goes through the same path."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from helpers import ANIMALS, FAST, WEATHER

from promptbank.bank import BankConfig, PromptBank
from promptbank.cli import main
from promptbank.distributed import TaskSpec, bank_blueprint, store_part, train_many, train_part

CONFIG = BankConfig(n_tokens=4, key_encoder="embedding-mean")  # the lda router: its statistics are summed
TEXTS = ANIMALS[0][:4] + WEATHER[0][:4]
SPECS = [
    TaskSpec("animals", *ANIMALS, options={"template": "Text: {text}\nAnimal:", "train_config": FAST}),
    TaskSpec("weather", *WEATHER, options={"template": "Sky: {text}\nWeather:", "train_config": FAST}),
    TaskSpec("both", ANIMALS[0] + WEATHER[0], ANIMALS[1] + WEATHER[1], options={"train_config": FAST}),
]


def _revive(texts: list[str], marker: str) -> list[str]:
    if os.path.exists(marker):  # the first attempt: this worker dies here
        os.remove(marker)
        os._exit(1)
    return texts


class DiesOnce:
    """Texts whose first unpickling, in a Ray worker, kills that worker (``os._exit``): a real
    worker death, which Ray must answer by running the task again in a new worker. Not a list:
    Ray sends lists as msgpack, without pickling them."""

    def __init__(self, texts: list[str], marker: str) -> None:
        self.texts, self.marker = texts, marker

    def __len__(self) -> int:
        return len(self.texts)

    def __reduce__(self):
        return _revive, (self.texts, self.marker)


def answers(bank: PromptBank) -> list[tuple]:
    return [(p.task, p.label, round(p.route_score, 4)) for p in bank.predict(TEXTS)]


def test_parallel_training_equals_sequential_and_resumes(tiny_folder: str, tmp_path: Path, local_ray):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker uses (num_cpus=1)
    try:
        sequential = PromptBank(tiny_folder, CONFIG)
        for spec in SPECS[:2]:
            sequential.add_task(spec.name, spec.texts, spec.labels, **spec.options)
    finally:
        torch.set_num_threads(threads)
    bank = PromptBank(sequential.backbone, CONFIG)
    result = train_many(bank, SPECS[:2], tmp_path / "bank", progress=False)
    assert result.added == ["animals", "weather"] and result.failed == {}
    for name in sequential.tasks:
        assert all(torch.equal(bank.prompt_state(name)[k], v) for k, v in sequential.prompt_state(name).items())
    assert answers(bank) == answers(sequential)
    saved = PromptBank.load(tmp_path / "bank", backbone=sequential.backbone)
    assert saved.tasks == ["animals", "weather"] and not (tmp_path / "bank.parts").exists()

    again = train_many(saved, SPECS, tmp_path / "bank", progress=False)  # only the task not in the bank
    assert again.added == ["both"] and PromptBank.load(tmp_path / "bank", backbone=tiny_folder).tasks == [
        "animals",
        "weather",
        "both",
    ]


def test_a_killed_worker_is_retried_and_a_bad_task_is_reported_without_losing_the_others(
    tiny_folder: str, tmp_path: Path, local_ray
):
    marker = tmp_path / "die-once"
    marker.write_text("")
    dying = TaskSpec("weather", DiesOnce(WEATHER[0], str(marker)), WEATHER[1], options=SPECS[1].options)
    bad = TaskSpec("bad", ["only one text"], ["a"], options={"train_config": FAST})  # one class: refused
    bank = PromptBank(tiny_folder, CONFIG)
    result = train_many(bank, [SPECS[0], dying, bad], tmp_path / "bank", retries=1, progress=False)
    assert not marker.exists()  # the first worker died
    assert result.added == ["animals", "weather"] and list(result.failed) == ["bad"]
    assert "InvalidDataError" in result.failed["bad"]
    assert PromptBank.load(tmp_path / "bank", backbone=tiny_folder).tasks == ["animals", "weather"]


def test_train_many_command_trains_a_folder_of_data_files_and_skips_what_the_bank_has(
    tiny_folder: str, tmp_path: Path, local_ray, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    for name, (texts, labels) in (("animals", ANIMALS), ("weather", WEATHER)):
        rows = "".join(f'{{"text": "{t}", "label": "{lab}"}}\n' for t, lab in zip(texts, labels))
        (data / f"{name}.jsonl").write_text(rows)
    (data / "notes.txt").write_text("not a data file: ignored")
    common = ["--bank", str(tmp_path / "bank"), "--backbone", tiny_folder, "--steps", "2", "--batch-size", "4"]
    new_bank = ["--n-tokens", "4", "--key-encoder", "embedding-mean"]
    assert main(["train-many", *common, *new_bank, "--data-dir", str(data)]) == 0
    assert "added 2 tasks" in capsys.readouterr().out
    bank = PromptBank.load(tmp_path / "bank", backbone=tiny_folder)
    assert bank.tasks == ["animals", "weather"] and bank.config.n_tokens == 4
    assert main(["train-many", *common, "--data-dir", str(data)]) == 0  # nothing left to train
    assert "added 0 tasks to" in capsys.readouterr().out
    assert main(["train-many", *common, "--task", "animals"]) == 2  # no NAME=SOURCE: refused before Ray
    assert "NAME=FILE" in capsys.readouterr().err


def test_parts_an_interrupted_run_left_are_merged_without_training_again(tiny_folder: str, tmp_path: Path):
    bank = PromptBank(tiny_folder, CONFIG)
    parts = tmp_path / "bank.parts"
    threads = torch.get_num_threads()
    try:  # train_part sets the thread count of the worker process it runs in: here, this one
        store_part(train_part(bank_blueprint(bank), SPECS[0], threads=1), parts, "animals")  # before the driver died
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    result = train_many(bank, SPECS[:1], tmp_path / "bank", progress=False)  # nothing left for Ray to run
    assert result.added == ["animals"] and not parts.exists()
    saved = PromptBank.load(tmp_path / "bank", backbone=bank.backbone)
    assert saved.tasks == ["animals"] and saved.task_info("animals").metadata["steps"] == FAST.steps
