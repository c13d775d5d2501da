"""Held-out routing: is the router or the key the limit on tasks neither was tuned on?

Same protocol as scripts/bench/heldout_routing.py: a router holding offline-9 (the tuning tasks)
gets the held-out tasks (``streams.heldout_tasks.HELDOUT``) added with the runner's budgets,
nothing re-tuned, and each task's test inputs are routed. Keys are cached under runs/keys_cache/,
so every variant is compared on the same draws.

Two parts:

* **routers** (runner's budgets, up to 1,024 key inputs per class, ``--draws`` draws, default key):
  the default ``lda`` router, other shrinkage, several k-means components per class, and a
  reference that is not a bank router: a logistic regression over tasks trained on every key
  (what a discriminative classifier with all the keys gets on the same key).
* **keys** (draw 0, train + validation keys only, to keep the study short on a CPU): the default
  key next to keys from the frozen LLM's own hidden states, the masked mean of layer 4 or 8 (of
  30) over the input's tokens, joined to the default key; and each key part's encoding speed,
  measured side by side on the same 256 training inputs (best of two, interleaved).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/studies/heldout_keys.py --draws 3 \
        --out runs/studies/heldout-keys.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import _bench  # noqa: E402
import routing_study as rs  # noqa: E402

from promptbank.keys import DEFAULT_KEY_ENCODER, l2_normalize  # noqa: E402
from promptbank.routing import make_router  # noqa: E402
from streams.heldout_tasks import HELDOUT  # noqa: E402
from streams.named import stream_tasks  # noqa: E402
from streams.sources import load_raw  # noqa: E402
from streams.splits import get_task  # noqa: E402

ROUTERS: dict[str, dict[str, Any]] = {
    "lda": {"strategy": "lda"},
    "lda-shrinkage-0.2": {"strategy": "lda", "shrinkage": 0.2},
    "lda-2-per-class": {"strategy": "lda", "per": 2},
    "lda-4-per-class": {"strategy": "lda", "per": 4},
    "logreg-all-keys": {"reference": True},
}
KEY_SETS = (
    "minilm",
    "minilm+embedding-set-mean",
    "minilm+embedding-set-mean+llm-layer4",
    "minilm+embedding-set-mean+llm-layer8",
    "llm-layer8",
)


class StudyEncoder(rs._LazyEncoder):
    """routing_study's encoder plus ``llm-layer<L>``: the masked mean of the frozen LLM's
    layer-L hidden state over the input's tokens (no special tokens, first 64 tokens)."""

    def encode(self, part: str, texts: list[str]) -> np.ndarray:
        if not part.startswith("llm-layer"):
            return super().encode(part, texts)
        if self._backbone is None:
            from promptbank.backbone import load_backbone

            self._backbone = load_backbone(device="cpu")
        layer = int(part.removeprefix("llm-layer"))
        model, tok = self._backbone.model, self._backbone.tokenizer
        out = np.zeros((len(texts), model.config.hidden_size), np.float32)
        order = np.argsort([len(t) for t in texts])
        full = model.model.layers
        model.model.layers = full[:layer]  # the layers above are not needed
        seen: list[torch.Tensor] = []
        hook = full[layer - 1].register_forward_hook(
            lambda _m, _i, output: seen.append(output[0] if isinstance(output, tuple) else output)
        )
        try:
            with torch.no_grad():
                for lo in range(0, len(texts), 32):
                    idx = order[lo : lo + 32]
                    batch = tok(
                        [texts[i] for i in idx],
                        return_tensors="pt",
                        padding=True,
                        truncation=True,
                        max_length=64,
                        add_special_tokens=False,
                    )
                    seen.clear()
                    model.model(**batch, use_cache=False)
                    mask = batch.attention_mask[..., None].float()
                    out[idx] = ((seen[-1] * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
        finally:
            hook.remove()
            model.model.layers = full
        return l2_normalize(out)  # unit norm, as every key part


def load_draw(draw: int, key_per_class: int, keys: str, encoder: StudyEncoder) -> list[dict[str, Any]]:
    """Router keys (train + val + key inputs) and test keys of every task, tuning tasks first."""
    rs.KEY_ENCODER = keys
    tuning, heldout = list(stream_tasks("offline-9", 1)), list(HELDOUT)
    bank_texts = {t for name in tuning for t in load_raw(name).texts}
    out = []
    for name in tuning + heldout:
        data = get_task(name, **dict(rs.BUDGETS, seed=draw, key_per_class=key_per_class))
        test = data.test_texts
        if name in heldout:  # as the bench: a stock phrase that is also a bank task's text routes either way
            test = [t for t in test if t not in bank_texts]
        parts = [(data.train_texts, data.train_labels, "train"), (data.val_texts, data.val_labels, "val")]
        if data.key_texts:
            parts.append((data.key_texts, data.key_labels, "key"))
        out.append(
            {
                "name": name,
                "heldout": name in heldout,
                "keys": np.concatenate([rs._cached_keys(encoder, name, f"{s}-s{draw}", t) for t, _, s in parts]),
                "labels": np.concatenate([np.asarray(lab, np.int64) for _, lab, _ in parts]),
                "test": rs._cached_keys(encoder, name, f"test-s{draw}", test),
            }
        )
    return out


def route_all(tasks: list[dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Routing accuracy of every task after all were added, and of the tuning tasks before."""
    if options.get("reference"):
        from sklearn.linear_model import LogisticRegression

        x = l2_normalize(np.concatenate([t["keys"] for t in tasks]))
        y = np.concatenate([np.full(len(t["keys"]), i) for i, t in enumerate(tasks)])
        clf = LogisticRegression(C=10.0, max_iter=1000).fit(x, y)
        return {
            "after": {t["name"]: float(np.mean(clf.predict(l2_normalize(t["test"])) == i)) for i, t in enumerate(tasks)}
        }
    options = dict(options)
    relabel = rs._subclusters(options.pop("per")) if "per" in options else None
    router = make_router(dim=tasks[0]["keys"].shape[1], **options)
    n_tuning = sum(not t["heldout"] for t in tasks)
    before = {}
    for i, t in enumerate(tasks):
        router.add_task(i, t["keys"], relabel(t["keys"], t["labels"]) if relabel else t["labels"])
        if i + 1 == n_tuning:
            before = {
                u["name"]: float(np.mean(router.route(u["test"]).task_ids == j)) for j, u in enumerate(tasks[: i + 1])
            }
    after = {t["name"]: float(np.mean(router.route(t["test"]).task_ids == i)) for i, t in enumerate(tasks)}
    return {"before": before, "after": after}


def key_speed(encoder: StudyEncoder, parts: list[str], repeats: int = 2) -> dict[str, float]:
    """Texts per second of each key part on the same 256 training inputs (bbc and trec), best of
    ``repeats`` interleaved passes, after a warm-up."""
    texts = [t for name in ("bbc", "trec") for t in get_task(name, **rs.BUDGETS).train_texts[:128]]
    for part in parts:
        encoder.encode(part, texts[:8])
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(repeats):
        for part in parts:
            started = time.perf_counter()
            encoder.encode(part, texts)
            best[part] = min(best[part], time.perf_counter() - started)
    return {part: len(texts) / seconds for part, seconds in best.items()}


def summarize(runs: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    held = [t["name"] for t in tasks if t["heldout"]]
    tuning = [t["name"] for t in tasks if not t["heldout"]]
    per_task = {n: float(np.mean([r["after"][n] for r in runs])) for n in held}
    means = [float(np.mean([r["after"][n] for n in held])) for r in runs]
    out = {
        "heldout_mean": float(np.mean(means)),
        "heldout_mean_std": float(np.std(means)),
        "heldout_min": min(per_task.values()),
        "per_heldout": per_task,
        "tuning_after": float(np.mean([np.mean([r["after"][n] for n in tuning]) for r in runs])),
        "draws": len(runs),
    }
    if runs[0].get("before"):
        out["tuning_before"] = float(np.mean([np.mean([r["before"][n] for n in tuning]) for r in runs]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3, help="data draws of the routers part")
    parser.add_argument("--out", default="runs/studies/heldout-keys.json")
    args = parser.parse_args()
    rs._set_threads()
    encoder = StudyEncoder()
    started = time.perf_counter()

    routers: dict[str, Any] = {}
    draws = [load_draw(d, rs.BUDGETS["key_per_class"], DEFAULT_KEY_ENCODER, encoder) for d in range(args.draws)]
    for name, options in ROUTERS.items():
        routers[name] = summarize([route_all(tasks, options) for tasks in draws], draws[0])
        _bench.log(f"router {name}: held-out {100 * routers[name]['heldout_mean']:.1f}")

    keys: dict[str, Any] = {}
    for key_set in KEY_SETS:
        tasks = load_draw(0, 0, key_set, encoder)
        keys[key_set] = summarize([route_all(tasks, ROUTERS["lda"])], tasks)
        _bench.log(f"keys {key_set}: held-out {100 * keys[key_set]['heldout_mean']:.1f}")

    speed = key_speed(encoder, sorted({p for k in KEY_SETS for p in k.split("+")}))
    _bench.log("key texts/s: " + ", ".join(f"{p} {v:.0f}" for p, v in speed.items()))

    _bench.write_json(
        args.out,
        {
            "study": "heldout_keys",
            "args": vars(args),
            "machine": _bench.machine_info(),
            "default_key": DEFAULT_KEY_ENCODER,
            "budgets": {k: v for k, v in rs.BUDGETS.items() if k != "seed"},
            "routers": routers,
            "keys": keys,
            "key_texts_per_s": speed,
            "seconds": time.perf_counter() - started,
        },
    )


if __name__ == "__main__":
    main()
