"""Module kinds beyond soft prompts (DePT, SSB, SSL, (IA)3, LoRA with MPC, VeRA): per-example
application in one mixed batch, per-task choice of kind in a bank, storage, and their errors."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import ANIMALS, FAST, WEATHER

from promptbank.backbone import FrozenLM, count_frozen_grads, load_backbone
from promptbank.bank import BankConfig, PromptBank
from promptbank.errors import InvalidDataError
from promptbank.lowrank import LoRA
from promptbank.module_batch import Applied
from promptbank.prompts import PROMPTS, LoPT1, build_prompt
from promptbank.trainer import TrainConfig, predict_scores, train_prompt

#: SmolLM2-135M's Linear shapes ([layers, in, out]); 9 query / 3 KV heads of 64
SMOLLM2 = {"q_proj": [30, 576, 576], "k_proj": [30, 576, 192], "v_proj": [30, 576, 192], "o_proj": [30, 576, 576],
           "gate_proj": [30, 576, 1536], "up_proj": [30, 576, 1536], "down_proj": [30, 1536, 576]}  # fmt: skip
KINDS = ["ulpt", "dept", "ssb", "ssl", "ia3", "lora", "vera", "pt"]
WEIGHT_KINDS = ["ssb", "ssl", "ia3", "lora", "vera"]
TEMPLATE = "Input: {text}\nLabel:"
TEXTS = ["the cat sat", "a dog barked loudly at night", "hello", "my cat purrs on the mat", "dogs run", "x y z",
         "long long long text here", "short"]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "options", "count"),
    [
        ("ssb", {}, 109_440),
        ("ssl", {}, 51_840),
        ("ia3", {}, 57_600),
        ("lora", {"rank": 2}, 115_200),
        ("lora", {"rank": 8}, 460_800),
        ("lora", {"rank": 2, "targets": "all"}, 610_560),
        ("lora", {"rank": 8, "targets": "all"}, 2_442_240),
        ("vera", {"rank": 256}, 38_400),
        ("vera", {"rank": 64, "targets": "all"}, 168_960),
        ("dept", {"rank": 4, "positions": 128}, 8_576),
    ],
)
def test_parameter_counts_on_smollm2_are_the_papers_arithmetic(method, options, count):
    """The counts of ../shared/methods.md for SmolLM2-135M (d = 576, 30 layers)."""
    n_tokens = 10 if method == "dept" else 20
    assert build_prompt(method, n_tokens, 576, shapes=SMOLLM2, **options).num_trainable() == count


def test_dpt_is_lopt1_under_another_name():
    prompt = build_prompt("dpt", 4, 32, rank=2)
    assert type(prompt) is LoPT1 and prompt.method == "lopt1"
    assert "dpt" not in PROMPTS.names() and PROMPTS.aliases() == {"dpt": "lopt1"}


def _moved(lm: FrozenLM, method: str, seed: int, n_tokens: int) -> Applied:
    """A module of ``method`` whose every trainable tensor has moved from its initialisation."""
    module = build_prompt(method, n_tokens, lm.hidden_size, shapes=lm.linear_shapes(), seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module.applied().frozen(lm.device)


def _inputs(lm: FrozenLM, n: int):
    ids = lm.encode(TEXTS[:n], TEMPLATE, 64).input_ids
    labels = [lm.label_token_ids(["cat", "dog big"])] * n  # a two-token label: continuations run too
    return ids, labels


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_a_batch_mixing_kinds_answers_like_each_input_alone(tiny_llama, bf16):
    """Eight kinds, prompts of lengths 0 to 5, in one forward pass; each input's scores equal
    those of the input answered alone with its own module (float tolerance)."""
    lm = FrozenLM(copy.deepcopy(tiny_llama.model), tiny_llama.tokenizer, "tiny-llama", device="cpu", bf16=bf16)
    lengths = {"ulpt": 3, "dept": 5, "pt": 2}
    modules = [_moved(lm, m, seed=i, n_tokens=lengths.get(m, 4)) for i, m in enumerate(KINDS)]
    assert sorted({m.prompt.shape[0] for m in modules}) == [0, 2, 3, 5]
    ids, labels = _inputs(lm, len(KINDS))
    mixed = predict_scores(lm, modules, list(range(len(KINDS))), ids, labels, batch_size=len(KINDS))
    alone = [predict_scores(lm, [modules[i]], [0], [ids[i]], [labels[i]])[0] for i in range(len(KINDS))]
    plain = predict_scores(lm, [Applied(torch.zeros(0, lm.hidden_size))], [0] * len(KINDS), ids, labels)
    tol = 2e-2 if bf16 else 1e-5
    for kind, m, a, p in zip(KINDS, mixed, alone, plain):
        assert abs(m - a).max() < tol, kind
        if not bf16:  # the module really acted (bf16 rounding is as large as a random tiny model's change)
            assert abs(a - p).max() > 1e-4, f"{kind} changed nothing"


@pytest.mark.parametrize("method", WEIGHT_KINDS)
def test_an_untrained_weight_module_is_the_identity(tiny_llama, method):
    module = build_prompt(method, 4, tiny_llama.hidden_size, shapes=tiny_llama.linear_shapes())
    ids, labels = _inputs(tiny_llama, 4)
    with_module = predict_scores(tiny_llama, [module.applied().frozen("cpu")], [0] * 4, ids, labels)
    plain = predict_scores(tiny_llama, [Applied(torch.zeros(0, tiny_llama.hidden_size))], [0] * 4, ids, labels)
    for a, b in zip(with_module, plain):
        assert abs(a - b).max() < 1e-6


@pytest.mark.parametrize("method", ["dept", *WEIGHT_KINDS])
def test_training_moves_the_module_and_never_the_llm(tiny_llama, method):
    before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    module = build_prompt(method, 3, tiny_llama.hidden_size, shapes=tiny_llama.linear_shapes(), seed=0)
    start = {k: v.clone() for k, v in module.trainable_state().items()}
    texts, labels = ANIMALS[0][:8], [0, 1, 0, 1, 0, 1, 0, 1]
    ids = tiny_llama.encode(texts, TEMPLATE, 16).input_ids
    train_prompt(tiny_llama, module, ids, labels, tiny_llama.label_token_ids(["cat", "dog"]), config=FAST)
    assert count_frozen_grads(tiny_llama.model) == 0
    assert all(torch.equal(v, tiny_llama.model.state_dict()[k]) for k, v in before.items())
    after = module.trainable_state()
    assert all(not torch.equal(after[k], start[k]) for k in start if "offset_a" not in k), after.keys()


def test_mpc_penalises_factors_by_their_distance_from_orthogonal():
    shapes = {"q_proj": [1, 8, 8], "v_proj": [1, 8, 4]}
    none, ortho, diag = (
        LoRA(0, 8, shapes=shapes, rank=2, mpc=mpc, mpc_weight=1.0) for mpc in ("none", "orthogonal", "diagonal")
    )
    assert none.regularization() is None
    eye = torch.eye(8)
    with torch.no_grad():
        for m in (ortho, diag):
            for t, (_, n_in, n_out) in shapes.items():
                m.lora_a[t].copy_(eye[:2, :n_in].unsqueeze(0))  # orthonormal rows
                m.lora_b[t].copy_(3 * torch.eye(n_out)[:, :2].unsqueeze(0))  # orthogonal columns of norm 3
    # B^T B = 9 I: not orthonormal (orthogonal: 2 targets x 2 x (9 - 1)^2), but diagonal (diagonal: 0)
    assert ortho.regularization().item() == pytest.approx(2 * 2 * 64.0)
    assert diag.regularization().item() == pytest.approx(0.0)
    ortho.regularization().backward()
    assert ortho.lora_b["q_proj"].grad.abs().sum() > 0


def _mixed_bank(backbone) -> PromptBank:
    bank = PromptBank(backbone, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    bank.add_task("animals", *ANIMALS, train_config=FAST)  # the bank's default kind (ULPT)
    bank.add_task("weather", *WEATHER, train_config=FAST, method="dept", module_options={"rank": 2, "positions": 32})
    bank.add_task("animals-ssb", *ANIMALS, train_config=FAST, method="ssb")
    bank.add_task(
        "weather-lora", *WEATHER, train_config=FAST, method="lora", module_options={"rank": 2, "mpc": "orthogonal"}
    )
    bank.add_task("animals-vera", *ANIMALS, train_config=FAST, method="vera", module_options={"rank": 4})
    return bank


def test_a_bank_of_mixed_kinds_answers_in_one_pass_and_reloads_in_a_new_process(tiny_folder, tmp_path):
    bank = _mixed_bank(load_backbone(tiny_folder))
    kinds = {n: bank.task_info(n).module["method"] for n in bank.tasks}
    assert kinds == {"animals": "ulpt", "weather": "dept", "animals-ssb": "ssb", "weather-lora": "lora",
                     "animals-vera": "vera"}  # fmt: skip
    texts = ANIMALS[0][:2] + WEATHER[0][:2]
    tasks = [n for n in bank.tasks for _ in texts]
    together = bank.predict(texts * len(bank.tasks), task=tasks, batch_size=64)
    one_by_one = [bank.predict([t], task=n)[0] for t, n in zip(texts * len(bank.tasks), tasks)]
    for a, b in zip(together, one_by_one):
        assert a.label == b.label and all(abs(a.scores[k] - b.scores[k]) < 1e-5 for k in a.scores)
    bank.save(tmp_path / "bank")
    script = textwrap.dedent(f"""
        import json, sys
        from promptbank.bank import PromptBank
        bank = PromptBank.load({str(tmp_path / "bank")!r})
        texts = {texts!r}
        out = {{n: [p.scores for p in bank.predict(texts, task=n)] for n in bank.tasks}}
        out["routed"] = [[p.task, p.scores] for p in bank.predict(texts)]
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    fresh = json.loads(run.stdout.strip().splitlines()[-1])
    for n in bank.tasks:
        assert fresh[n] == [p.scores for p in bank.predict(texts, task=n)], n
    assert fresh["routed"] == [[p.task, p.scores] for p in bank.predict(texts)]


def test_bad_module_options_get_one_clear_error(tiny_llama):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    cases = [
        ({"method": "prefix-tuning"}, "unknown module kind 'prefix-tuning'; choose one of: pt, ulpt"),
        ({"method": "lora", "module_options": {"rank": 0}}, "rank must be > 0"),
        ({"method": "dept", "module_options": {"rank": -1}}, "rank must be > 0"),
        ({"method": "ssb", "module_options": {"mpc": "orthogonal"}}, "'ssb' module has none"),
        ({"method": "lora", "module_options": {"mpc": "sideways"}}, "mpc must be one of"),
        ({"method": "lora", "module_options": {"targets": "q_proj,wq"}}, "targets must be 'all' or distinct names"),
        ({"module_options": {"rank": 2}}, "module_options need method="),
        ({"method": "dept", "module_options": {"positions": 4}}, "DePT offsets cover 4 positions"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidDataError, match=message.replace("(", r"\(")):
            bank.add_task("t", *ANIMALS, train_config=FAST, **kwargs)
        assert bank.tasks == []  # nothing half-added
    with pytest.raises(InvalidDataError, match="bad option for the 'ssb' module: .*'rank'"):
        PromptBank(tiny_llama, BankConfig(method="ssb", prompt_options={"rank": 2}))


def test_weight_kinds_need_a_llama_style_model(tiny_t5):
    with pytest.raises(InvalidDataError, match="Llama-style"):
        PromptBank(tiny_t5, BankConfig(method="ssb", key_encoder="embedding-mean"))


def test_a_schema_1_bank_still_loads_and_answers_the_same(tiny_llama, tmp_path):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    bank.add_task("animals", *ANIMALS, train_config=FAST)
    path = bank.save(tmp_path / "bank")
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 1
    for task in manifest["tasks"]:
        del task["module"], task["task_type"]
    manifest_path.write_text(json.dumps(manifest))
    loaded = PromptBank.load(path, backbone=tiny_llama)
    assert loaded.task_info("animals").module["method"] == "ulpt"
    texts = ANIMALS[0][:3]
    assert [p.scores for p in loaded.predict(texts)] == [p.scores for p in bank.predict(texts)]


def test_only_prompt_only_tasks_export_to_peft(tiny_llama, tmp_path):
    bank = PromptBank(tiny_llama, BankConfig(n_tokens=4, key_encoder="embedding-mean"))
    bank.add_task("animals", *ANIMALS, train_config=TrainConfig(steps=1, progress=False), method="ia3")
    with pytest.raises(InvalidDataError, match="cannot be written as a PEFT prompt-tuning adapter"):
        bank.export_peft("animals", tmp_path / "out")
    assert not (tmp_path / "out").exists()
