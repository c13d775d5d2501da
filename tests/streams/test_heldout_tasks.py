"""The held-out tasks routing is judged on: real data, every class present, no text shared with a bank task."""

from __future__ import annotations

import pytest

from streams.heldout_tasks import HELDOUT, passages
from streams.named import STREAMS, stream_tasks
from streams.sources import TASKS, load_raw


def test_long_documents_become_passages_of_whole_words():
    text = " ".join(f"w{i}" for i in range(100))
    out = passages(text, words=48)
    assert [len(p.split()) for p in out] == [48, 48]  # the 4-word tail is too short to keep
    assert out[0].startswith("w0 ") and out[1].startswith("w48 ")
    assert passages("one two three", words=4) == ["one two three"]


def test_no_named_stream_uses_a_held_out_task():  # the streams' tasks are the tuning set
    used = {t for name in STREAMS.names() for order in STREAMS.get(name).orders for t in stream_tasks(name, order)}
    assert len(HELDOUT) >= 8 and not used & set(HELDOUT)


@pytest.mark.parametrize("name", HELDOUT)
def test_a_held_out_task_loads_with_every_class_and_shares_no_text_with_the_bank(name):
    source, raw = TASKS.get(name), load_raw(name)
    assert not source.online and set(raw.labels) == set(range(len(source.label_names)))
    assert len(raw.texts) >= 100 * len(source.label_names) // 2
    bank_texts = {t for task in stream_tasks("offline-9", 1) for t in load_raw(task).texts}
    assert len(bank_texts & set(raw.texts)) <= 2  # stock phrases ("Thank you."), dropped from the protocol's tests
