"""One set of defaults: the run configuration nests the library's configs and the CLI is built from them."""

from __future__ import annotations

import dataclasses

import pytest

from promptbank.bank import BankConfig
from promptbank.errors import InvalidDataError
from promptbank.trainer import TrainConfig
from streams.cli import build_parser
from streams.config import RunConfig, nested_values
from streams.splits import DataConfig


def test_run_flags_default_to_the_config_fields():
    args = build_parser().parse_args(["run"])
    for prefix, cls in (("bank", BankConfig), ("train", TrainConfig), ("data", DataConfig)):
        values = nested_values(args, prefix)
        assert values, prefix
        defaults = dataclasses.asdict(cls())
        assert {k: defaults[k] for k in values} == values
    assert args.router == BankConfig().router["strategy"]


def test_run_flags_reach_the_nested_configs():
    args = build_parser().parse_args(["run", "--steps", "7", "--n-tokens", "5", "--test-per-class", "9"])
    assert nested_values(args, "train")["steps"] == 7
    assert nested_values(args, "bank")["n_tokens"] == 5
    assert nested_values(args, "data")["test_per_class"] == 9


def test_run_config_has_one_seed_and_reads_back_from_json():
    cfg = RunConfig(seed=3, bank=BankConfig(seed=9), train=TrainConfig(seed=9))
    assert cfg.bank.seed == cfg.train.seed == 3
    again = RunConfig(**dataclasses.asdict(cfg))
    assert again == cfg and again.fingerprint() == cfg.fingerprint()


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch_size": 0}, {"lr": -1.0}, {"warmup_ratio": 1.5}])
def test_train_config_is_checked(bad):
    with pytest.raises(InvalidDataError):
        TrainConfig(**bad)
