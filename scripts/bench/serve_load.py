"""Ray Serve load test: requests/s and p50/p99 latency of a served bank with cross-request batching
against one request per forward, and answers checked against ``bank.predict``.

A local Ray instance serves ``--bank`` (``promptbank.serving.ray_serve.bank_app``, one replica of
``--replica-cpus`` CPUs). ``--clients`` threads post single-text requests over HTTP in a closed
loop (each sends its next request when the last is answered) until ``--requests`` are answered
or ``--max-seconds`` pass. The texts are test inputs of the bank's tasks, interleaved, so
concurrent requests are for different tasks and routed. Each setting is measured after a warm-up;
``max_batch_size=1`` is the one-request-per-forward baseline.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench/serve_load.py --bank runs/offline-9-o1/bank \
        --clients 16 --requests 192 --out runs/bench/serve-load.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import _bench


def post(url: str, row: dict) -> tuple[float, dict]:
    request = urllib.request.Request(url, data=json.dumps(row).encode(), headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as reply:
        answer = json.loads(reply.read())
    return time.perf_counter() - started, answer


def load(url: str, texts: list[str], clients: int, max_seconds: float) -> dict:
    """Closed-loop load: ``clients`` threads share the queue of ``texts``; returns latencies and answers."""
    latencies: list[float] = [0.0] * len(texts)
    answers: list[dict | None] = [None] * len(texts)
    next_index = iter(range(len(texts)))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            latencies[i], answers[i] = post(url, {"text": texts[i]})

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done = [i for i, a in enumerate(answers) if a is not None]
    lat = sorted(latencies[i] for i in done)
    return {
        "answered": len(done),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(done) / wall, 2),
        "p50_ms": round(1000 * statistics.median(lat), 1),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "answers": {i: answers[i] for i in done},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _bench.add_common_args(parser, "runs/bench/serve-load.json")
    parser.add_argument("--bank", required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--batch-sizes", default="1,16", help="max_batch_size settings, comma-separated")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound on each setting's load phase")
    args = parser.parse_args()
    _bench.set_threads(args.threads)
    _bench.quiet_truncation()
    import ray
    from ray import serve

    from promptbank.bank import PromptBank
    from promptbank.serving.ray_serve import bank_app
    from streams.splits import get_task

    bank = PromptBank.load(args.bank)
    tests = [get_task(name, test_per_class=50).test_texts for name in bank.tasks]
    texts = [t for group in zip(*tests) for t in group][: args.requests]  # task after task: concurrent = mixed
    expected = bank.predict(texts)
    result = {"machine": _bench.machine_info(), "bank": args.bank, "tasks": len(bank.tasks),
              "command": "scripts/bench/serve_load.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
              "settings": []}  # fmt: skip
    del bank
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/"
    try:
        for size in [int(b) for b in args.batch_sizes.split(",")]:
            app = bank_app(args.bank, max_batch_size=size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
                           num_cpus=args.replica_cpus)  # fmt: skip
            handle = serve.run(app)
            load(url, texts[: 2 * args.clients], args.clients, args.max_seconds)  # warm-up
            sizes_before = len(handle.seen_batch_sizes.remote().result())
            measured = load(url, texts, args.clients, args.max_seconds)
            batches = handle.seen_batch_sizes.remote().result()[sizes_before:]
            answers = measured.pop("answers")
            same = [a["task"] == expected[i].task and a["label"] == expected[i].label for i, a in answers.items()]
            row = {"max_batch_size": size, **measured, "mean_batch": round(statistics.mean(batches), 2),
                   "answers_equal_predict": round(sum(same) / len(same), 4)}  # fmt: skip
            result["settings"].append(row)
            print(row, flush=True)
            serve.delete("default")
    finally:
        serve.shutdown()
        ray.shutdown()
    base, batched = result["settings"][0], result["settings"][-1]
    result["speedup_requests_per_s"] = round(batched["requests_per_s"] / base["requests_per_s"], 2)
    print(_bench.write_json(Path(args.out), result))


if __name__ == "__main__":
    main()
