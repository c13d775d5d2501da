"""A saved bank behind Ray Serve, batching concurrent requests across tasks.

Each replica loads the bank once. ``@serve.batch`` collects the requests that arrive within
``batch_wait_timeout_s`` (up to ``max_batch_size``), whatever their tasks, and answers them with
one ``PromptBank.predict`` call, so requests for different tasks share one mixed-task forward
(two when a batch mixes task-given and routed requests: ``serving.requests``). Requests are JSON
objects ``{"text": ..., "task": optional}`` posted to the route; the answer is
``serving.requests.answer_record``. Ray is imported only when an application is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidDataError
from .requests import answer_record, answer_rows, task_or_none


def bank_app(
    bank_dir: str | Path,
    backbone: str | None = None,
    max_batch_size: int | None = None,
    batch_wait_timeout_s: float = 0.01,
    num_replicas: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
) -> Any:
    """A Ray Serve application answering with the bank saved in ``bank_dir``.

    Args:
        bank_dir: a saved bank (loaded once per replica).
        backbone: the frozen LLM, if not the one the bank records.
        max_batch_size: most requests answered by one ``predict`` call; 1 turns batching off.
            Default: 16 on GPU replicas, 1 on CPU-only ones, where a forward costs the same per
            token whatever the batch and padding mixed lengths makes batching lose (0.66x the
            requests/s on the 2-core benchmark, BENCHMARKS.md section 5).
        batch_wait_timeout_s: how long the first request of a batch waits for others.
        num_replicas: replicas, each with its own copy of the LLM.
        num_cpus: CPUs per replica (its torch threads).
        num_gpus: GPUs per replica; a fraction shares one GPU.

    Returns:
        The application for ``serve.run``; its handle's ``answer.remote({"text": ...})`` and HTTP POSTs
        give the same answers.

    Raises:
        InvalidDataError: no bank in ``bank_dir``, a batch size below 1, or Ray Serve is not installed.

    Example:
        >>> from ray import serve
        >>> handle = serve.run(bank_app("runs/offline-5/bank"))
        >>> handle.answer.remote({"text": "WIN a free cruise"}).result()["label"]
        'spam'
    """
    try:
        from ray import serve
        from starlette.requests import Request
        from starlette.responses import JSONResponse
    except ImportError:
        raise InvalidDataError("serving on Ray needs Ray Serve. Fix: pip install 'promptbank[distributed]'") from None
    if not (Path(bank_dir) / "manifest.json").exists():
        raise InvalidDataError(f"{bank_dir}: no saved bank there (manifest.json missing); Fix: save or train one first")
    if max_batch_size is None:
        max_batch_size = 16 if num_gpus > 0 else 1
    if max_batch_size < 1:
        raise InvalidDataError(f"max_batch_size must be at least 1, got {max_batch_size}")
    threads = max(1, int(num_cpus))

    @serve.deployment(
        num_replicas=num_replicas,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        # Serve lets 5 requests into a replica by default, which would cap every batch at 5
        max_ongoing_requests=max(5, 2 * max_batch_size),
    )
    class BankDeployment:
        def __init__(self) -> None:
            import torch

            from ..bank import PromptBank

            torch.set_num_threads(threads)
            self.bank = PromptBank.load(bank_dir, backbone=backbone)
            self.batch_sizes: list[int] = []

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self.batch_sizes.append(len(requests))
            tasks = [task_or_none(r.get("task")) for r in requests]
            known = set(self.bank.tasks)
            ok = [i for i, t in enumerate(tasks) if t is None or t in known]  # one bad row fails only itself
            records: list[dict[str, Any]] = [
                {"error": f"no task named {t!r} in the bank; known tasks: {sorted(known)}"} for t in tasks
            ]
            preds = answer_rows(self.bank, [str(requests[i]["text"]) for i in ok], [tasks[i] for i in ok])
            for i, p in zip(ok, preds):
                records[i] = answer_record(p)
            return records

        def seen_batch_sizes(self) -> list[int]:
            """How many requests each ``predict`` call of this replica answered (for load tests)."""
            return list(self.batch_sizes)

        async def __call__(self, request: Request) -> JSONResponse:
            try:
                row = await request.json()
            except ValueError:
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                return JSONResponse({"error": 'post a JSON object {"text": "...", "task": optional}'}, status_code=400)
            record = await self.answer(row)
            return JSONResponse(record, status_code=400 if "error" in record else 200)

    return BankDeployment.bind()
