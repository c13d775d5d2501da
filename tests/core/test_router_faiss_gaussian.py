"""The k-NN and Gaussian routers beyond the shared contract: FAISS index choice, scale, statistics, novelty."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from helpers import DIM, N_TASKS, clustered, same_routing

import promptbank.routing as router_mod
from promptbank.errors import (
    BankFormatError,
    InvalidDataError,
)
from promptbank.routing import (
    GaussianRouter,
    KNNRouter,
    faiss_index,
    knn,
    make_router,
    router_from_state,
    stats,
)

STRATEGIES = {
    "knn": ("knn", {}),
    "knn-all-perclass": ("knn", {"summary": "all", "per_class": True}),
    "gaussian": ("gaussian", {}),
    "gaussian-perclass": ("gaussian", {"per_class": True}),
}


@pytest.fixture(scope="module")
def data():
    return clustered()


def build(name: str, train, **extra) -> router_mod.Router:
    strategy, options = STRATEGIES[name]
    router = make_router(strategy, dim=train[0][0].shape[1], **options, **extra)
    for t, (keys, labels) in enumerate(train):
        router.add_task(t, keys, labels)
    return router


def test_factories_reject_unknown_names():
    with pytest.raises(InvalidDataError, match="knn"):
        make_router("nearest", dim=8)
    with pytest.raises(InvalidDataError, match="option"):
        make_router("knn", dim=8, colour="blue")
    with pytest.raises(InvalidDataError, match="HNSWxx"):
        make_router("knn", dim=8, index="HNSWxx")
    with pytest.raises(BankFormatError):
        router_from_state({"strategy": "magic"}, {})


def test_cost_per_task_stays_small(data):
    train, _, _ = data
    knn = build("knn", train)
    assert knn.nbytes_per_task() < 13_000  # 8 float32 centroids of 384-d + ids
    small, big = build("gaussian", train[:2]), build("gaussian", train)
    _, a = small.state()
    _, b = big.state()
    per_task = (sum(x.nbytes for x in b.values()) - sum(x.nbytes for x in a.values())) / 3
    assert per_task < 10_000  # the 384x384 covariance is shared, not per task


def test_gaussian_removal_subtracts_exactly_what_was_added(data):
    train, queries, _ = data
    only = build("gaussian", train[:2])
    more = build("gaussian", train[:2])
    more.add_task(4, *train[4])
    more.remove_task(4)
    # the scatter is kept at float32 precision (as saved): equal to float32 rounding
    scale = np.abs(only.covariance()).max()
    assert np.allclose(only.covariance(), more.covariance(), rtol=0, atol=1e-6 * scale)
    assert np.array_equal(only.route(queries).task_ids, more.route(queries).task_ids)


@pytest.mark.parametrize("strategy", ["lda", "gaussian"])
@pytest.mark.parametrize("dim", [DIM, 16])  # fewer keys than dimensions (Gram path), and more
def test_class_statistics_do_not_depend_on_the_block_size(strategy, dim, monkeypatch):
    """add_task centres a task's keys a block of rows at a time to bound its memory; the
    means, scatter and principal factor it keeps must be those of the whole task."""
    train, queries, _ = clustered(n_tasks=3, n=60, dim=dim)

    def built(rows: int) -> router_mod.Router:
        monkeypatch.setattr(stats, "STATS_BLOCK_ROWS", rows)
        router = make_router(strategy, dim=dim, per_class=True, scatter_rank=4)
        for t, (keys, labels) in enumerate(train):
            router.add_task(t, keys, labels)
        return router

    whole, blocks = built(10_000), built(7)
    (_, a), (_, b) = whole.state(), blocks.state()
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        if name == "task_factor":  # F^T F: a principal direction's sign is arbitrary
            x, y = np.einsum("trd,tre->tde", x, x), np.einsum("trd,tre->tde", y, y)
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5, err_msg=name)
    assert np.array_equal(whole.route(queries).task_ids, blocks.route(queries).task_ids)


@pytest.mark.parametrize("strategy", ["lda", "gaussian", "knn"])
def test_a_task_added_in_blocks_is_the_task_added_whole(strategy):
    """``add_task_blocks`` takes a task's keys a block at a time (the bank encodes them so):
    uneven blocks, each with its own labels, must give the state of one ``add_task``."""
    train, queries, _ = clustered(n_tasks=3, n=60, dim=16)
    whole = make_router(strategy, dim=16, per_class=True)
    pieces = make_router(strategy, dim=16, per_class=True)
    for t, (keys, labels) in enumerate(train):
        whole.add_task(t, keys, labels)
        cuts = [0, 1, 8, 33, len(keys)]  # a one-row block, and blocks of either size
        pieces.add_task_blocks(t, ((keys[a:b], labels[a:b]) for a, b in zip(cuts, cuts[1:])))
    (_, a), (_, b) = whole.state(), pieces.state()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(
            a[name].astype(np.float64), b[name].astype(np.float64), rtol=1e-3, atol=1e-5, err_msg=name
        )
    assert np.array_equal(whole.route(queries).task_ids, pieces.route(queries).task_ids)


@pytest.mark.parametrize("strategy", ["lda", "knn"])
def test_blocks_of_keys_are_checked_before_the_task_is_added(strategy):
    keys, labels = clustered(n_tasks=1, n=20, dim=16)[0][0]
    router = make_router(strategy, dim=16, per_class=True)
    with pytest.raises(InvalidDataError, match="with every block"):
        router.add_task_blocks(0, [(keys[:10], labels[:10]), (keys[10:], None)])
    with pytest.raises(InvalidDataError, match="at least one key"):
        router.add_task_blocks(0, [])
    bad = keys[10:].copy()
    bad[3, 0] = np.nan
    with pytest.raises(InvalidDataError, match="NaN"):
        router.add_task_blocks(0, [(keys[:10], labels[:10]), (bad, labels[10:])])
    assert router.task_ids() == []  # nothing half-added
    router.add_task_blocks(0, [(keys[:10], labels[:10]), (keys[10:], labels[10:])])
    assert router.task_ids() == [0]


@pytest.mark.parametrize("spec", ["IVF4,Flat", "HNSW32"])
def test_knn_approximate_indexes_add_and_remove(spec, data):
    train, queries, truth = data
    router = build("knn-all-perclass", train[:2], index=spec)
    # IVF4 needs 39 * 4 training vectors: held exactly in Flat until then
    assert router._spec == ("Flat" if spec.startswith("IVF") else spec)
    for t in (2, 3, 4):
        router.add_task(t, *train[t])
    assert router._spec == spec and router.ntotal == 5 * 60
    if spec.startswith("IVF"):
        assert router._target is None and router._target_need is None
    assert (router.route(queries).task_ids == truth).mean() >= 0.99
    router.remove_task(3)  # HNSW cannot remove_ids: rebuilt without the task
    assert router.ntotal == 4 * 60
    assert not (router.route(queries).candidates == 3).any()
    loaded = router_from_state(*router.state())
    assert same_routing(router.route(queries), loaded.route(queries))


def test_knn_auto_index_turns_compressed_past_threshold(monkeypatch):
    # Real threshold is 50k vectors; shrink it so the switch to IVF-SQ8 happens here.
    monkeypatch.setattr(knn, "AUTO_FLAT_MAX_VECTORS", 600)
    train, queries, truth = clustered(n_tasks=6, n=200, dim=32, seed=1)
    router = KNNRouter(dim=32, summary="all")
    exact = KNNRouter(dim=32, summary="all", index="Flat")
    for t, (keys, _) in enumerate(train):
        router.add_task(t, keys)
        exact.add_task(t, keys)
        assert router._spec == ("Flat" if router.ntotal <= 600 else "IVF16,SQ8")
    assert (router.route(queries).task_ids == truth).mean() >= 0.99
    agree = (router.route(queries).task_ids == exact.route(queries).task_ids).mean()
    assert agree >= 0.99
    router.remove_task(0)  # add/remove still exact after the switch
    assert router.ntotal == 5 * 200 and 0 not in router.route(queries).candidates
    router.add_task(0, train[0][0])
    assert router.ntotal == 6 * 200 and (router.route(queries).task_ids == truth).mean() >= 0.99
    loaded = router_from_state(*router.state())
    assert loaded._spec == "IVF16,SQ8" and loaded._trained_at == 800
    assert same_routing(router.route(queries), loaded.route(queries))


def test_knn_auto_spec_follows_the_routing_benchmark():
    # BENCHMARKS.md section 2: Flat up to ~50k vectors, then IVF-SQ8 (PQ48 lost 11-26 points)
    assert faiss_index.AUTO_FLAT_MAX_VECTORS == 50_000
    assert faiss_index.auto_large_spec(50_001, 384) == "IVF1024,SQ8"
    assert faiss_index.auto_large_spec(100_000, 384) == "IVF2048,SQ8"
    # 4,096 lists at 400k keys: 99.2% agreement at nprobe 8, against 95.6% with 2,048
    assert faiss_index.auto_large_spec(400_000, 384) == "IVF4096,SQ8"
    # 1M tasks (4M keys): 4,096 lists agreed on 42%; 16,384 is the cap (k-means cost)
    assert faiss_index.auto_large_spec(1_000_000, 384) == "IVF8192,SQ8"
    assert faiss_index.auto_large_spec(4_000_000, 384) == "IVF16384,SQ8"
    assert faiss_index.auto_large_spec(100_000_000, 384) == "IVF16384,SQ8"
    assert faiss_index.auto_large_spec(1_000, 384) == "IVF16,SQ8"  # no more lists than it can train


def test_knn_auto_index_regrows_with_the_bank(monkeypatch):
    monkeypatch.setattr(knn, "AUTO_FLAT_MAX_VECTORS", 400)
    monkeypatch.setattr(knn, "AUTO_REGROW_FACTOR", 2)
    train, queries, truth = clustered(n_tasks=10, n=200, dim=32, seed=2)
    router = KNNRouter(dim=32, summary="all")
    specs = []
    for t, (keys, _) in enumerate(train):
        router.add_task(t, keys)
        specs.append(router._spec)
    # 600 vectors: IVF8 (what 600 can train); retrained at 2x: 1,200 -> IVF16, 2,000 -> still 16 lists
    assert specs[:3] == ["Flat", "Flat", "IVF8,SQ8"]
    assert specs[5] == "IVF16,SQ8" and specs[-1] == "IVF16,SQ8" and router._trained_at == 1200
    assert router.ntotal == 10 * 200
    assert (router.route(queries).task_ids == truth).mean() >= 0.99
    router.remove_task(4)
    assert router.ntotal == 9 * 200 and 4 not in router.route(queries).candidates


def test_knn_auto_index_trains_many_lists_on_the_minimum_sample(monkeypatch):
    # Past TRAIN_SAMPLE_MAX (2 x 39 x 4,096; here 2 x 39 x 8), k-means gets 39 points per list, not 78.
    monkeypatch.setattr(knn, "AUTO_FLAT_MAX_VECTORS", 400)
    monkeypatch.setattr(knn, "TRAIN_SAMPLE_MAX", 2 * 39 * 8)
    sizes = []
    real_train = faiss.IndexIVFScalarQuantizer.train
    monkeypatch.setattr(
        faiss.IndexIVFScalarQuantizer, "train", lambda self, x: sizes.append(len(x)) or real_train(self, x)
    )
    train, queries, truth = clustered(n_tasks=8, n=200, dim=32, seed=2)
    router = KNNRouter(dim=32, summary="all")
    for t, (keys, _) in enumerate(train):
        router.add_task(t, keys)
    # IVF8 at 600 vectors: all 600 (<= 2 x 312); IVF16 at 1,200: 16 x 39 = 624, not all 1,200
    assert router._spec == "IVF16,SQ8" and sizes == [600, 624]
    assert (router.route(queries).task_ids == truth).mean() >= 0.99


@pytest.mark.parametrize("spec", ["IVF4,PQ8", "PQ8", "OPQ8,IVF4,PQ8"])
def test_pq_specs_skip_polysemous_training(spec):
    index = faiss_index.make_index(spec, 32)
    pqs = [p for p in faiss_index.unwrap(index) if hasattr(p, "do_polysemous_training")]
    assert pqs and not any(p.do_polysemous_training for p in pqs)


def test_knn_train_size_is_computed_once_per_target(monkeypatch, data):
    calls = []
    real = faiss_index.make_index
    monkeypatch.setattr(faiss_index, "make_index", lambda spec, dim: calls.append(spec) or real(spec, dim))
    train, queries, truth = data
    router = KNNRouter(dim=DIM, summary="all", index="IVF4,Flat")  # needs 156 vectors
    calls.clear()
    for t, (keys, _) in enumerate(train):
        router.add_task(t, keys)
    assert router._spec == "IVF4,Flat"
    # the spec checked once (it also gives the train size), the Flat collector, the trained index
    assert calls == ["IVF4,Flat", "Flat", "IVF4,Flat"], calls
    assert (router.route(queries).task_ids == truth).mean() >= 0.99


def test_knn_hnsw_searches_with_a_useful_ef(data):
    import faiss

    train, queries, truth = data
    router = build("knn", train, index="HNSW32")
    router.route(queries[:2])
    inner = faiss.downcast_index(router._index.index)
    assert inner.hnsw.efSearch >= faiss_index.HNSW_MIN_EF_SEARCH


def test_gaussian_confidence_is_a_distribution(data):
    """Over all tasks the scores are a posterior: each task once per row, summing to one,
    soft at a high temperature yet peaked on the true task; a shorter list is its head."""
    train, queries, truth = data
    router = GaussianRouter(dim=DIM, temperature=500.0)
    for t, (keys, labels) in enumerate(train):
        router.add_task(t, keys, labels)
    r = router.route(queries, top=N_TASKS)
    assert (np.sort(r.candidates, axis=1) == np.arange(N_TASKS)).all()
    assert np.allclose(r.candidate_scores.sum(axis=1), 1.0, atol=1e-5)
    assert (r.candidates[:, 0] == truth).mean() >= 0.99
    assert (r.candidate_scores[:, 0] < 0.9).all() and (r.candidate_scores[:, -1] > 0.01).all()  # soft
    head = router.route(queries, top=2)
    assert np.array_equal(head.candidates, r.candidates[:, :2])
    assert np.allclose(head.candidate_scores, r.candidate_scores[:, :2], atol=1e-6)


@pytest.fixture(params=[True, False], ids=["int8-coarse", "float32-coarse"])
def coarse_int8(request, monkeypatch):
    """Both coarse steps of faiss_index.search, whichever this CPU would pick."""
    monkeypatch.setattr(faiss_index, "int8_coarse", lambda: request.param)
    return request.param


@pytest.mark.parametrize("metric,codes", [("ip", "SQ8"), ("l2", "SQ8"), ("l2", "PQ8x4")])
def test_ivf_search_with_its_own_coarse_step_matches_faiss(metric, codes, coarse_int8):
    """The coarse product only chooses the lists: probing all of them gives FAISS' exact
    answer, and with a few probed the distances stay exact wherever the ids agree. (PQ's L2
    scan adds the coarse distances _search passes, SQ's recomputes them.)"""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    q = rng.normal(size=(50, 32)).astype(np.float32)
    m = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    index = faiss.index_factory(32, f"IVF32,{codes}", m)
    index.train(x)
    index.add_with_ids(x, np.arange(3000, dtype=np.int64) * 3)
    for nprobe, agree in ((4, 0.98), (32, 1.0)):
        index.nprobe = nprobe
        d_ref, i_ref = index.search(q, 10)
        d, i = faiss_index.search(index, q, 10, {})
        same = i == i_ref
        assert same.mean() >= agree
        assert np.allclose(d[same], d_ref[same], rtol=1e-5, atol=1e-4)
    # search_preassigned splits the queries over threads only in mode 3 (FAISS' default 0
    # leaves that to search(), which _search does not call): 1.56x at 100k tasks, two threads
    assert index.parallel_mode == 3


def test_coarse_step_picks_the_float32_lists_at_key_size(coarse_int8):
    """At the bank's key sizes the coarse step (8-bit or float32) picks the lists that FAISS'
    float32 coarse search picks, so the answers are FAISS' own (ids and distances)."""
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(64, 384)).astype(np.float32)
    x = (centres[rng.integers(0, 64, 4000)] + 0.5 * rng.normal(size=(4000, 384))).astype(np.float32)
    q = (centres[rng.integers(0, 64, 400)] + 0.5 * rng.normal(size=(400, 384))).astype(np.float32)
    index = faiss.index_factory(384, "IVF64,SQ8", faiss.METRIC_L2)
    index.train(x)
    index.add(x)
    index.nprobe = 4
    d_ref, i_ref = index.search(q, 5)
    memo: dict = {}
    d, i = faiss_index.search(index, q, 5, memo)
    assert (i == i_ref).all(axis=1).mean() >= 0.995
    assert np.allclose(d[i == i_ref], d_ref[i == i_ref], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("novelty", ["relative", "posterior", "nearest", "margin"])
def test_lda_novelty_flags_a_held_out_task_and_persists(novelty, data):
    train, queries, truth = data
    router = make_router("lda", dim=DIM, novelty=novelty)
    for t in range(N_TASKS - 1):  # the last task stays unseen
        router.add_task(t, *train[t])
    known, unseen = queries[truth < N_TASKS - 1], queries[truth == N_TASKS - 1]
    closeness = router.route(known).closeness
    if novelty == "posterior":
        assert ((closeness > 0) & (closeness <= 1 + 1e-9)).all()  # the chosen task's posterior
    router.unknown_threshold = float(np.quantile(closeness, 0.05))
    assert (router.route(unseen).task_ids == -1).mean() >= 0.9
    assert (router.route(known).task_ids == -1).mean() <= 0.06
    config, arrays = router.state()
    assert config["novelty"] == novelty
    loaded = router_from_state(config, {k: a.copy() for k, a in arrays.items()})
    assert same_routing(router.route(queries), loaded.route(queries))
    del config["novelty"]  # a state saved before the option: its threshold was on the distance
    assert router_from_state(config, arrays).config.novelty == "nearest"
    with pytest.raises(InvalidDataError, match="novelty"):
        make_router("lda", dim=DIM, novelty="entropy")


def test_exhaustive_search_uses_blas_for_batches_and_restores_faiss_global(monkeypatch):
    """faiss-cpu 1.15 streams the whole database per query for 256 x 384-d batches (15x slower
    than BLAS); _search lowers FAISS's BLAS threshold for its own call only."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 384)).astype(np.float32)
    q = rng.normal(size=(64, 384)).astype(np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatL2(384))
    index.add_with_ids(x, np.arange(2000, dtype=np.int64) * 7)
    kept = faiss.cvar.distance_compute_blas_threshold
    seen = []
    real_search = faiss.IndexIDMap2.search

    def spy(self, *args, **kwargs):
        seen.append(faiss.cvar.distance_compute_blas_threshold)
        return real_search(self, *args, **kwargs)

    monkeypatch.setattr(faiss.IndexIDMap2, "search", spy)
    d, i = faiss_index.search(index, q, 5, {})
    monkeypatch.undo()
    assert seen == [min(kept, faiss_index.BLAS_MIN_QUERIES)]
    assert faiss.cvar.distance_compute_blas_threshold == kept
    d_ref, i_ref = index.search(q, 5)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-3)


def test_compacted_ivf_lists_hold_and_find_the_same_vectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    index = faiss.index_factory(16, "IVF16,SQ8", faiss.METRIC_L2)
    index.train(x)
    for start in range(0, len(x), 500):  # lists grown a block at a time, as a router rebuild does
        index.add_with_ids(x[start : start + 500], np.arange(start, start + 500))
    index.nprobe = 4
    before = index.search(x[:50], 5)
    lists = [faiss.rev_swig_ptr(index.invlists.get_ids(li), index.invlists.list_size(li)).copy() for li in range(16)]
    faiss_index.compact_lists(index)
    assert [index.invlists.list_size(li) for li in range(16)] == [len(ids) for ids in lists]
    for li, ids in enumerate(lists):
        np.testing.assert_array_equal(faiss.rev_swig_ptr(index.invlists.get_ids(li), len(ids)), ids)
    np.testing.assert_array_equal(index.search(x[:50], 5)[1], before[1])
    index.remove_ids(faiss.IDSelectorRange(0, 100))  # the compacted lists still take edits
    index.add_with_ids(x[:10], np.arange(10))
    assert index.ntotal == len(x) - 90
