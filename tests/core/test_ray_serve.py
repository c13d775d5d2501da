"""A saved bank on Ray Serve: concurrent requests for different tasks are batched together and
answered as ``PromptBank.predict`` answers them, over the handle and over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import ANIMALS, WEATHER, free_port

from promptbank.bank import PromptBank
from promptbank.errors import InvalidDataError
from promptbank.serving.ray_serve import bank_app
from promptbank.serving.requests import answer_record, answer_rows

ROWS = [
    {"text": t, "task": task}
    for t, task in zip(ANIMALS[0][:4] + WEATHER[0][:4], [None, "animals", None, "weather", None, "weather", None, None])
]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_served_answers_equal_predict_and_requests_of_different_tasks_share_a_batch(
    bank: PromptBank, tiny_folder: str, tmp_path: Path, local_ray
):
    from ray import serve

    bank.save(tmp_path / "bank")
    expected = [answer_record(p) for p in answer_rows(bank, [r["text"] for r in ROWS], [r["task"] for r in ROWS])]
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = bank_app(tmp_path / "bank", backbone=tiny_folder, max_batch_size=16, batch_wait_timeout_s=0.5)
        handle = serve.run(app)
        served = [f.result() for f in [handle.answer.remote(r) for r in ROWS]]  # all in flight at once
        for got, want in zip(served, expected):
            assert (got["task"], got["label"]) == (want["task"], want["label"])
            assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert max(handle.seen_batch_sizes.remote().result()) > 1  # answered together, across tasks

        status, answer = _post(f"http://127.0.0.1:{port}/", json.dumps(ROWS[1]).encode())
        assert status == 200 and (answer["task"], answer["label"]) == (expected[1]["task"], expected[1]["label"])
        status, answer = _post(f"http://127.0.0.1:{port}/", json.dumps({"text": "a cat", "task": "birds"}).encode())
        assert status == 400 and "no task named 'birds'" in answer["error"]
        status, answer = _post(f"http://127.0.0.1:{port}/", b"not json")
        assert status == 400 and "JSON object" in answer["error"]
    finally:
        serve.shutdown()
    with pytest.raises(InvalidDataError, match="no saved bank"):
        bank_app(tmp_path / "nothing")
