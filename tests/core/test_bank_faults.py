"""Fault injection and bad input: hostile manifests, damaged files, concurrent writers and readers.

Every case must end in one ``PromptBankError`` that names the problem, or in a bank that loads;
never in a raw library error, a file read outside the bank, or a lost bank.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save

from promptbank import storage
from promptbank.backbone import load_backbone
from promptbank.bank import PromptBank
from promptbank.cli import main as cli_main
from promptbank.errors import BankFormatError, InvalidDataError, PromptBankError
from promptbank.inputs import check_texts
from promptbank.manifest import SCHEMA_VERSION


def saved(bank: PromptBank, tmp_path: Path) -> Path:
    path = tmp_path / "bank"
    bank.save(path)
    return path


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def pointing_at(name: str):
    def change(m):
        m["files"]["prompts"]["file"] = name

    return change


# -- hostile and inconsistent manifests ------------------------------------------------------

HOSTILE = {
    "a path leaving the bank": (pointing_at("../outside/prompts-0123456789abcdef.safetensors"), "not a bank data file"),
    "an absolute path": (pointing_at("/etc/passwd"), "not a bank data file"),
    "a name with a separator": (pointing_at("sub/prompts-0123456789abcdef.safetensors"), "not a bank data file"),
    "a field from a newer version": (lambda m: m.update(encryption="aes"), "newer promptbank"),
    "a newer schema version": (lambda m: m.update(schema_version=SCHEMA_VERSION + 1), "newer promptbank"),
    "a string schema version": (lambda m: m.update(schema_version="1"), "must be an integer"),
    "a schema version that never existed": (lambda m: m.update(schema_version=0), "does not exist"),
    "a missing field": (lambda m: m.pop("tasks"), "missing"),
    "an unknown config field": (lambda m: m["config"].update(colour="blue"), "newer promptbank"),
    "a duplicate task name": (lambda m: m["tasks"][1].update(name=m["tasks"][0]["name"]), "appears twice"),
    "a task id beyond next_task_id": (lambda m: m["tasks"][1].update(task_id=99), "below next_task_id"),
    "router and tasks that disagree": (lambda m: m["router"]["tasks"].pop(), "router holds tasks"),
    "a task list that is not a list": (lambda m: m.update(tasks={"a": 1}), "must be a list"),
    "an unknown file role": (lambda m: m["files"].update(extra=m["files"]["prompts"]), "newer promptbank"),
    "a checksum that is not hex": (lambda m: m["files"]["prompts"].update(sha256="zz"), "hex digest"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_manifests_are_refused_before_any_file_is_read(case, bank, tmp_path, monkeypatch):
    path = saved(bank, tmp_path)
    change, match = HOSTILE[case]
    edit_manifest(path, change)
    opened = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self.name) or real(self))
    with pytest.raises(BankFormatError, match=match):
        PromptBank.load(path, backbone=bank.backbone)
    assert opened == ["manifest.json"]  # refused on the manifest alone


def test_a_link_leaving_the_bank_is_refused(bank, tmp_path):
    path = saved(bank, tmp_path)
    prompts = next(path.glob("prompts-*.safetensors"))
    outside = tmp_path / "outside.safetensors"
    shutil.copy(prompts, outside)  # same bytes, same checksum
    prompts.unlink()
    prompts.symlink_to(outside)
    with pytest.raises(BankFormatError, match="leaves the bank"):
        PromptBank.load(path, backbone=bank.backbone)


def test_parts_that_disagree_are_refused_at_load_not_in_predict(bank, tmp_path):
    path = saved(bank, tmp_path)
    edit_manifest(path, lambda m: m["tasks"][0]["module"].update(n_tokens=5))  # the tensors hold 4 soft tokens
    with pytest.raises(BankFormatError, match="module config needs"):
        PromptBank.load(path, backbone=bank.backbone)
    path = tmp_path / "again"
    bank.save(path)
    prompts = next(path.glob("prompts-*.safetensors"))
    tensors = load_file(prompts)
    data = save({**tensors, "task7.z": tensors["task0.z"].clone()})  # tensors of a task the manifest does not list
    prompts.write_bytes(data)
    edit_manifest(
        path, lambda m: m["files"]["prompts"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    )
    with pytest.raises(BankFormatError, match="belong to no listed task"):
        PromptBank.load(path, backbone=bank.backbone)


def test_a_damaged_index_with_a_matching_checksum_is_a_format_error(bank, tmp_path):
    path = saved(bank, tmp_path)  # the fixture's bank uses the knn router: it has a .faiss file
    index = next(path.glob("keys-*.faiss"))
    data = b"\x00" * 64
    index.write_bytes(data)

    def fix_checksum(m):
        m["files"]["index"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    edit_manifest(path, fix_checksum)
    with pytest.raises(BankFormatError, match="router state"):
        PromptBank.load(path, backbone=bank.backbone)


def test_messages_say_what_is_true(bank, tmp_path):
    with pytest.raises(BankFormatError, match="does not exist"):
        PromptBank.load(tmp_path / "nowhere", backbone=bank.backbone)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BankFormatError, match="is a file"):
        PromptBank.load(tmp_path / "file", backbone=bank.backbone)
    with pytest.raises(InvalidDataError, match="is a file"):
        bank.save(tmp_path / "file")
    path = saved(bank, tmp_path)
    edit_manifest(path, lambda m: m.update(schema_version="1"))
    with pytest.raises(BankFormatError) as err:
        PromptBank.load(path, backbone=bank.backbone)
    assert "reads 1" not in str(err.value)


# -- writes: temp files, permissions, concurrent writers and readers ---------------------------


def test_the_next_save_cleans_temp_files_of_killed_saves(bank, tmp_path):
    path = saved(bank, tmp_path)
    (path / ".prompts-abc.safetensors.x1.tmp").write_bytes(b"half")
    (path / ".manifest.json.x2.tmp").write_bytes(b"half")
    bank.save(path)
    assert not list(path.glob(".*.tmp"))
    assert PromptBank.load(path, backbone=bank.backbone).tasks == bank.tasks


def test_bank_files_follow_the_umask(bank, tmp_path):
    old = os.umask(0o022)
    try:
        path = saved(bank, tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir() if not p.name.startswith(".")}
    assert set(modes.values()) == {0o644}, modes


WORKER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, torch
    from promptbank import storage
    from pathlib import Path

    role, who, path, seconds = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    manifest = {"backbone": {"name": "x"}, "key_encoder": {"name": "k"}, "config": {}, "prompt_config": {"method": "ulpt"},
                "router": {"strategy": "lda", "tasks": [[0, 1]]}, "next_task_id": 1,
                "tasks": [{"name": "t", "task_id": 0, "label_names": ["a", "b"], "template": "{text}", "metadata": {}}]}
    print("ready", flush=True)
    while not (path.parent / "go").exists():  # every worker starts at once, after the slow imports
        time.sleep(0.01)
    done, failures, deadline = 0, [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if role == "writer":
                value = float(who * 100000 + done)  # every save has files of its own
                storage.write_bank(path, {**manifest, "tasks": [{**manifest["tasks"][0], "metadata": {"v": value}}]},
                                   {"task0.z": torch.full((64, 64), value)}, {"comp_mean": np.full(256, value)})
            else:
                m, tensors, arrays = storage.read_bank(path)
                value = m["tasks"][0]["metadata"]["v"]  # files and manifest of one save
                assert float(tensors["task0.z"][0, 0]) == value and float(arrays["comp_mean"][0]) == value
            done += 1
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    print(json.dumps({"role": role, "done": done, "failures": failures[:5], "n_failures": len(failures)}))
    """
)


def test_concurrent_writers_and_readers_never_lose_the_bank(tmp_path):
    path = tmp_path / "shared"
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    storage.write_bank(path, *_seed_bank())  # a first bank
    procs = [subprocess.Popen([sys.executable, str(worker), role, str(i), str(path), "3"], stdout=subprocess.PIPE, text=True)
             for i, role in enumerate(["writer", "writer", "writer", "reader", "reader"])]  # fmt: skip
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    (tmp_path / "go").touch()
    reports = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for r in reports:
        assert r["n_failures"] == 0, r
        assert r["done"] > 0, r
    manifest, tensors, _ = storage.read_bank(path)  # the last complete save won, and it loads
    assert float(tensors["task0.z"][0, 0]) == manifest["tasks"][0]["metadata"]["v"]
    assert len(list(path.glob("*.safetensors"))) == 2  # no generation left behind


def _seed_bank():
    manifest = {
        "backbone": {"name": "x"}, "key_encoder": {"name": "k"}, "config": {}, "prompt_config": {"method": "ulpt"},
        "router": {"strategy": "lda", "tasks": [[0, 1]]}, "next_task_id": 1,
        "tasks": [{"name": "t", "task_id": 0, "label_names": ["a", "b"], "template": "{text}", "metadata": {"v": 0.0}}],
    }  # fmt: skip
    return manifest, {"task0.z": torch.zeros(64, 64)}, {"comp_mean": np.zeros(256)}


# -- bad input ----------------------------------------------------------------------------


def test_invalid_unicode_is_refused_by_the_input_checks():
    with pytest.raises(InvalidDataError, match="not valid Unicode"):
        check_texts(["fine", "broken \udc80 text"])


def test_cli_predict_checks_its_input_before_loading_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(PromptBank, "load", lambda *a, **k: pytest.fail("the bank was loaded"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert cli_main(["predict", "--bank", str(tmp_path)]) == 2
    assert "no texts" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9 au lait\n")))
    assert cli_main(["predict", "--bank", str(tmp_path)]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err


def test_a_backbone_folder_holding_a_pickle_is_refused_without_unpickling(tiny_llama, tmp_path, monkeypatch):
    folder = tmp_path / "pickled"
    tiny_llama.model.config.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    torch.save(tiny_llama.model.state_dict(), folder / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    with pytest.raises(PromptBankError, match="safetensors"):
        load_backbone(str(folder))
