"""The routing strategies added by the routing study (``lda``), and the study script's
measurements, on synthetic clustered keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import same_routing

from promptbank.errors import BankFormatError, InvalidDataError, TaskExistsError, UnknownTaskError
from promptbank.routing import (
    GaussianRouter,
    LDARouter,
    faiss_index,
    gaussian,
    heap,
    make_router,
    router_from_state,
)
from promptbank.routing.mean_codes import MEAN_OUTLIERS, pack_codes, unpack_codes
from promptbank.routing.stats import BackgroundMoments, TaskStats

DIM = 64
N_TASKS = 5


def shared_covariance_tasks(n_tasks: int = N_TASKS, n: int = 80, dim: int = DIM, seed: int = 0):
    """Per task: two classes around a task centre; every class shares one full-rank,
    rotated noise covariance (the case LDA is built for). Well separated, unit-norm keys."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    noise = rotation * np.geomspace(1.0, 0.05, dim)  # x @ noise: decaying spectrum, rotated
    train, test = [], []
    for _ in range(n_tasks):
        centre = rng.normal(size=dim) * 0.35
        classes = centre + 0.15 * rng.normal(size=(2, dim))
        for split in (train, test):
            labels = rng.integers(0, 2, size=n)
            x = classes[labels] + rng.normal(size=(n, dim)) @ noise.T
            x[:, 0] += 3.0  # a common offset direction, as sentence embeddings have
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            split.append((x.astype(np.float32), labels))
    queries = np.concatenate([x for x, _ in test])
    truth = np.repeat(np.arange(n_tasks), n)
    return train, queries, truth


@pytest.fixture(scope="module")
def data():
    return shared_covariance_tasks()


def build(train, skip: int | None = None, **options) -> LDARouter:
    router = make_router("lda", dim=next(t for t in train if t is not None)[0].shape[1], **options)
    for t, task in enumerate(train):
        if t != skip:
            router.add_task(t, *task)
    return router


def exact_pooled_covariance(train) -> np.ndarray:
    scatter, n, m = np.zeros((DIM, DIM)), 0, 0
    for keys, labels in train:
        x = keys.astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for c in np.unique(labels):
            d = x[labels == c] - x[labels == c].mean(axis=0)
            scatter += d.T @ d
            n, m = n + len(d), m + 1
    return scatter / (n - m)


def test_lda_is_registered_and_routes_separated_tasks(data):
    train, queries, truth = data
    router = build(train)
    assert isinstance(router, LDARouter) and router.strategy == "lda" and router.config.per_class
    assert router.task_ids() == list(range(N_TASKS)) and len(router) == N_TASKS and 3 in router
    r = router.route(queries, top=3)
    assert r.task_ids.dtype == np.int64 and r.candidates.shape == (len(queries), 3)
    assert (r.task_ids == truth).mean() >= 0.95
    assert (r.candidates == truth[:, None]).any(axis=1).mean() >= 0.99
    assert np.array_equal(r.candidates[:, 0], r.task_ids)
    assert np.all((r.candidate_scores >= 0) & (r.candidate_scores <= 1 + 1e-6))
    assert np.all(np.diff(r.candidate_scores, axis=1) <= 1e-6)  # best first


@pytest.mark.parametrize("n", [80, 40, 8])  # more keys than dimensions (64) or fewer (rows folded in later)
def test_lda_uses_the_exact_pooled_covariance(n):
    train, _, _ = shared_covariance_tasks(n_tasks=30, n=n)
    router = build(train, shrinkage=0.0)
    assert np.allclose(router.covariance(), exact_pooled_covariance(train), atol=1e-10)
    assert router_from_state(*router.state()).covariance().tobytes() == router.covariance().tobytes()
    if n <= 16:
        return  # a rank-8 factor + diagonal is exact for so few keys
    approx = GaussianRouter(dim=DIM, per_class=True, shrinkage=0.0)  # rank-8 + diagonal
    for t, (keys, labels) in enumerate(train):
        approx.add_task(t, keys, labels)
    assert not np.allclose(approx.covariance(), exact_pooled_covariance(train), atol=1e-4)


def whitened_apart(seed: int, dim: int = DIM, n: int = 80, n_tasks: int = N_TASKS):
    """Tasks whose means differ mostly along low-variance directions of a rotated noise
    covariance with a fast-decaying spectrum: telling them apart needs the whole covariance,
    not its top directions plus a diagonal."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    half = rotation * np.geomspace(1.0, 0.02, dim)  # covariance = half @ half.T
    train, test = [], []
    for _ in range(n_tasks):
        z = rng.normal(size=dim)
        centre = half @ (z * 1.5 * np.sqrt(dim) / 4 / np.linalg.norm(z))
        classes = centre + (half @ (0.3 * rng.normal(size=(dim, 2)))).T
        for split in (train, test):
            labels = rng.integers(0, 2, size=n)
            x = classes[labels] + rng.normal(size=(n, dim)) @ half.T
            x[:, 0] += 20.0  # keys share a dominant direction, as sentence embeddings do
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            split.append((x.astype(np.float32), labels))
    return train, np.concatenate([x for x, _ in test]), np.repeat(np.arange(n_tasks), n)


def test_lda_beats_the_low_rank_gaussian_when_the_full_covariance_matters():
    train, queries, truth = whitened_apart(seed=0)
    lda = build(train)
    gauss = GaussianRouter(dim=DIM, per_class=True)  # rank-8 + diagonal scatter per task
    for t, (keys, labels) in enumerate(train):
        gauss.add_task(t, keys, labels)
    acc_lda = (lda.route(queries, top=1).task_ids == truth).mean()
    acc_gauss = (gauss.route(queries, top=1).task_ids == truth).mean()
    assert acc_lda >= 0.9 and acc_lda > acc_gauss + 0.05, (acc_lda, acc_gauss)


def test_lda_remove_forgets_the_task_and_stays_close_to_a_rebuilt_router(data):
    train, queries, truth = data
    router = build(train)
    router.route(queries[:1])  # the whitening cache must be dropped by remove_task
    router.remove_task(2)
    assert router.task_ids() == [0, 1, 3, 4] and 2 not in router
    after = router.route(queries, top=3)
    assert not (after.candidates == 2).any()
    others = truth != 2
    rebuilt = build(train, skip=2)
    agree = (after.task_ids[others] == rebuilt.route(queries[others], top=1).task_ids).mean()
    assert agree >= 0.97
    acc, acc_rebuilt = (
        (after.task_ids[others] == truth[others]).mean(),
        (rebuilt.route(queries[others], top=1).task_ids == truth[others]).mean(),
    )
    assert acc >= acc_rebuilt - 0.02
    # what a removed task leaves in the shared scatter (by default all of its within-class
    # scatter) is positive semi-definite, so the covariance stays a covariance
    eig = np.linalg.eigvalsh(router._scatter - rebuilt._scatter)
    assert eig.min() > -2e-3 * eig.max()
    with pytest.raises(UnknownTaskError):
        router.remove_task(2)


def test_lda_removal_factor_is_optional_and_subtracted(data):
    # scatter_rank=8 stores a rank-8 factor per task and subtracts it on removal
    train, _, _ = data
    plain, ranked = build(train), build(train, scatter_rank=8)
    assert plain.config.scatter_rank == 0 and ranked.config.scatter_rank == 8
    np.testing.assert_allclose(plain._scatter, ranked._scatter)  # routing does not depend on it
    plain.remove_task(2)
    ranked.remove_task(2)
    rebuilt = build(train, skip=2)
    left_plain = np.linalg.norm(plain._scatter - rebuilt._scatter)
    left_ranked = np.linalg.norm(ranked._scatter - rebuilt._scatter)
    assert left_ranked < 0.9 * left_plain


def test_lda_rebuild_whitens_block_by_block_like_all_at_once(monkeypatch, data):
    train, queries, _ = data
    whole = build(train).route(queries, top=3)
    monkeypatch.setattr(gaussian, "REBUILD_BLOCK_MEANS", 3)  # 2 classes per task: 3 blocks
    blocks = build(train)
    got = blocks.route(queries, top=3)
    assert len(blocks._cache["serials"]) == N_TASKS and blocks._cache["index"].ntotal == 2 * N_TASKS
    np.testing.assert_array_equal(got.candidates, whole.candidates)
    np.testing.assert_allclose(got.candidate_scores, whole.candidate_scores, rtol=1e-5, atol=1e-6)


def test_lda_removing_every_task_resets_exactly(data):
    train, queries, _ = data
    router = build(train)
    for t in range(N_TASKS):
        router.remove_task(t)
    assert len(router) == 0 and not router._scatter.any()
    empty = router.route(queries[:4], top=2)
    assert (empty.task_ids == -1).all() and (empty.candidates == -1).all()
    for t, (keys, labels) in enumerate(train[:3]):
        router.add_task(t, keys, labels)
    assert same_routing(router.route(queries), build(train[:3]).route(queries))


@pytest.mark.parametrize("options", [{}, {"per_class": False}, {"scatter_rank": 8}, {"shrinkage": 0.3}])
def test_lda_state_round_trip_routes_identically_and_stays_editable(options, data):
    train, queries, _ = data
    router = build(train[:4], **options)
    config, arrays = router.state()
    config = json.loads(json.dumps(config))  # must be plain JSON
    assert config["strategy"] == "lda"
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in arrays.values())
    loaded = router_from_state(config, {k: a.copy() for k, a in arrays.items()})
    assert type(loaded) is LDARouter
    assert same_routing(router.route(queries), loaded.route(queries))
    for r in (router, loaded):  # both keep evolving the same way, removal included
        r.add_task(4, *train[4])
        r.remove_task(1)
    assert same_routing(router.route(queries), loaded.route(queries))


@pytest.mark.parametrize("novelty", ["relative", "nearest"])
def test_lda_unknown_threshold_flags_far_queries(data, novelty):
    """Random directions are far from every task: the distance-based closeness flags them (the
    "margin" one need not: a point far from every task can still be much nearer one of them)."""
    train, queries, _ = data
    router = build(train, novelty=novelty)
    near = router.route(queries).closeness
    far_keys = np.random.default_rng(7).normal(size=(50, DIM)).astype(np.float32)
    far_keys /= np.linalg.norm(far_keys, axis=1, keepdims=True)
    far = router.route(far_keys).closeness
    threshold = float(np.quantile(near, 0.01))
    assert far.max() < threshold
    flagged = build(train, unknown_threshold=threshold, novelty=novelty).route(far_keys)
    assert (flagged.task_ids == -1).all() and (flagged.candidates[:, 0] >= 0).all()


def test_relative_closeness_is_relative_mahalanobis(data):
    """The default closeness equals its definition, computed here from the router's covariance and
    means: -(d2 to the chosen task's nearest mean - d2 to the Gaussian of every key) / dim."""
    train, queries, _ = data
    router = build(train)
    assert router.config.novelty == "relative"
    routing = router.route(queries)
    stats = [router._tasks[t] for t in router.task_ids()]
    means = np.concatenate([s.float_means() for s in stats]).astype(np.float64)
    counts = np.concatenate([s.counts for s in stats]).astype(np.float64)
    owner = np.concatenate([np.full(len(s.counts), t) for t, s in zip(router.task_ids(), stats)])
    within = router.covariance()
    centre = counts @ means / counts.sum()
    total = within + ((means - centre).T * counts) @ (means - centre) / counts.sum()
    x = queries / np.linalg.norm(queries, axis=1, keepdims=True)

    def d2(rows: np.ndarray, cov: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", rows, np.linalg.solve(cov, rows.T).T)

    own = np.array([d2(x[i] - means[owner == t], within).min() for i, t in enumerate(routing.task_ids)])
    expected = -(own - d2(x - centre, total)) / DIM
    assert np.allclose(routing.closeness, expected, rtol=1e-3, atol=1e-3)


def test_margin_closeness_is_the_gap_to_the_runner_up_task(data):
    """``novelty="margin"``: the chosen task's class-mixture log-likelihood less the runner-up
    task's, / dim, computed here from the router's covariance, means and class shares."""
    train, queries, _ = data
    router = build(train, novelty="margin")
    routing = router.route(queries)
    stats = [router._tasks[t] for t in router.task_ids()]
    means = np.concatenate([s.float_means() for s in stats]).astype(np.float64)
    logw = np.concatenate([np.log(s.counts / s.counts.sum()) for s in stats])
    owner = np.concatenate([np.full(len(s.counts), t) for t, s in zip(router.task_ids(), stats)])
    x = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    within = router.covariance()
    diff = x[:, None, :] - means[None]
    d2 = np.einsum("ijk,ijk->ij", diff, np.linalg.solve(within, diff.reshape(-1, DIM).T).T.reshape(diff.shape))
    ll = -0.5 * d2 + logw
    task_ll = np.sort(np.stack([np.logaddexp.reduce(ll[:, owner == t], axis=1) for t in router.task_ids()], 1))
    assert np.allclose(routing.closeness, (task_ll[:, -1] - task_ll[:, -2]) / DIM, rtol=1e-3, atol=1e-3)
    assert (routing.closeness >= 0).all()
    # an input between two tasks is less familiar than one at a task's class mean
    between = router.route((means[owner == 0][:1] + means[owner == 1][:1]).astype(np.float32)).closeness
    at_mean = router.route(means[owner == 0][:1].astype(np.float32)).closeness
    assert between[0] < at_mean[0]


def test_background_moments_small_and_large_banks_agree():
    """Few means: decomposed through their Gram matrix; more means than dims: a dim x dim one."""
    rng = np.random.default_rng(3)
    dim = 24
    means, counts = rng.normal(size=(40, dim)), rng.integers(1, 30, size=40)
    queries = rng.normal(size=(6, dim)).astype(np.float32)
    for k in (10, 40):
        moments = BackgroundMoments(dim)
        moments.add(means[: k // 2], counts[: k // 2])
        moments.add(means[k // 2 : k], counts[k // 2 : k])
        assert (moments.second is None) == (k <= dim)
        centre = counts[:k] @ means[:k] / counts[:k].sum()
        cov = np.eye(dim) + ((means[:k] - centre).T * counts[:k]) @ (means[:k] - centre) / counts[:k].sum()
        diff = queries - centre
        expected = np.einsum("ij,ij->i", diff, np.linalg.solve(cov, diff.T).T)
        assert np.allclose(moments.background(dim).squared_distance(queries), expected, rtol=1e-4)
    assert BackgroundMoments(dim).background(8).squared_distance(queries).shape == (6,)


def test_lda_errors_and_cost_per_task(data):
    train, _, _ = data
    router = build(train[:2])
    with pytest.raises(TaskExistsError):
        router.add_task(1, *train[1])
    with pytest.raises(InvalidDataError, match="dimension"):
        router.add_task(9, train[2][0][:, :10])
    with pytest.raises(InvalidDataError):
        router.add_task(9, train[2][0], labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidDataError):
        make_router("lda", dim=DIM, colour="blue")
    with pytest.raises(InvalidDataError, match="mean_bits"):
        make_router("lda", dim=DIM, mean_bits=4)
    # per task: 2 class means (6-bit + outliers) and their counts; the scatter is shared
    _, a = router.state()
    router.add_task(2, *train[2])
    _, b = router.state()
    per_task = sum(x.nbytes for x in b.values()) - sum(x.nbytes for x in a.values())
    assert per_task <= 2 * (-(-DIM // 4) * 3 + (1 + MEAN_OUTLIERS) * 4 + MEAN_OUTLIERS * 2) + 64


def test_lda_state_is_compact(data):
    train, _, _ = data
    _, arrays = build(train).state()
    assert "scatter" not in arrays and "task_residual" not in arrays  # residual: unused by lda
    assert arrays["scatter_packed"].dtype == np.float32
    assert arrays["scatter_packed"].shape == (DIM * (DIM + 1) // 2,)  # 4x below float64 d x d
    k = MEAN_OUTLIERS  # 6-bit means, k outlier components kept (float32 values, int16 positions)
    assert arrays["comp_mean"].dtype == np.uint8 and arrays["comp_mean"].shape == (2 * N_TASKS, -(-DIM // 4) * 3)
    assert arrays["comp_mean_scale"].dtype == np.float16  # 6 bits: scale and exact values in float16
    assert arrays["comp_mean_scale"].shape == (2 * N_TASKS, 1 + k) and arrays["comp_mean_outlier"].shape == (
        2 * N_TASKS,
        k,
    )
    shared = arrays["scatter_packed"].nbytes
    assert sum(a.nbytes for a in arrays.values()) - shared <= N_TASKS * 2 * (
        DIM * 3 // 4 + 3 + (1 + k) * 4 + k * 2 + 16
    )
    _, arrays8 = build(train, mean_bits=8).state()
    assert arrays8["comp_mean"].dtype == np.int8 and arrays8["comp_mean_scale"].shape == (2 * N_TASKS, 1 + k)
    _, arrays16 = build(train, mean_bits=16).state()
    assert arrays16["comp_mean"].dtype == np.float16 and "comp_mean_scale" not in arrays16


def test_lda_tasks_in_memory_share_what_they_do_not_keep(data):
    """Per-task memory at a million tasks: no per-task dict, one shared empty factor and
    residual (read-only) for every task, added or loaded, 6-bit means held packed, and a loaded
    router's tasks reading their class rows from the state's arrays (no arrays per task)."""
    train, _, _ = data
    router = build(train)
    loaded = router_from_state(*router.state())
    for r in (router, loaded):
        first, *rest = r._tasks.values()
        assert not hasattr(first, "__dict__")
        assert all(t.factor is first.factor and t.residual is first.residual for t in rest)
        assert first.factor.shape == (0, DIM) and first.residual.size == 0 and not first.factor.flags.writeable
        assert first.means.dtype == np.uint8 and first.means.shape[1] == -(-DIM // 4) * 3  # 6-bit, packed
    assert all(t.rows is next(iter(loaded._tasks.values())).rows for t in loaded._tasks.values())
    with_factor = build(train, scatter_rank=2)
    assert next(iter(with_factor._tasks.values())).factor.shape == (2, DIM)


@pytest.mark.parametrize("mean_bits", [6, 8])
def test_lda_coded_means_survive_a_save_and_load(data, mean_bits):
    """6- and 8-bit means load back to exactly the codes they were saved from, and the loaded
    router routes as the saved one; a packed array of the wrong width is a format error."""
    train, queries, _ = data
    router = build(train[:4], mean_bits=mean_bits)
    config, arrays = router.state()
    loaded = router_from_state(json.loads(json.dumps(config)), arrays)
    for tid, stats in router._tasks.items():
        assert np.array_equal(loaded._tasks[tid].means, stats.means)
        assert np.array_equal(loaded._tasks[tid].float_means(), stats.float_means())
    assert same_routing(router.route(queries), loaded.route(queries))
    if mean_bits == 6:
        with pytest.raises(BankFormatError, match="6-bit"):
            router_from_state(config, {**arrays, "comp_mean": arrays["comp_mean"][:, :-3]})
    for name in ("comp_label", "comp_mean", "comp_mean_scale", "comp_mean_outlier"):  # a row short
        with pytest.raises(BankFormatError, match="do not match"):
            router_from_state(config, {**arrays, name: arrays[name][:-1]})


def test_six_bit_codes_pack_four_to_three_bytes():
    """Every code in +-31 survives packing, at any width (a width not a multiple of 4 pads)."""
    assert pack_codes(np.zeros((0, 960), np.int8)).shape == (0, 720)  # an empty router saves
    assert unpack_codes(np.zeros((0, 720), np.uint8), 960).shape == (0, 960)
    rng = np.random.default_rng(0)
    for dim in (1, 3, 4, 383, 960):
        codes = rng.integers(-31, 32, size=(5, dim)).astype(np.int8)
        codes[0, :] = -31
        codes[1, :] = 31
        packed = pack_codes(codes)
        assert packed.dtype == np.uint8 and packed.shape == (5, -(-dim // 4) * 3)
        assert np.array_equal(unpack_codes(packed, dim), codes)


def test_lda_loads_a_state_saved_before_8_bit_means_as_it_was(data):
    """A state without ``mean_bits`` (float16 means) loads as a 16-bit router and routes as
    saved; tasks added to it keep float16 means."""
    train, queries, _ = data
    router = build(train[:4], mean_bits=16)
    config, arrays = router.state()
    del config["mean_bits"]
    loaded = router_from_state(json.loads(json.dumps(config)), arrays)
    assert loaded.config.mean_bits == 16 and same_routing(router.route(queries), loaded.route(queries))
    loaded.add_task(4, *train[4])
    assert loaded.state()[1]["comp_mean"].dtype == np.float16


def test_lda_loads_state_saved_in_the_float64_layout(data):
    """Banks saved before the packed layout (full float64 scatter, float32 means, a residual
    per task) still load, and route as the router they were saved from."""
    train, queries, _ = data
    router = build(train[:4], mean_bits=16)
    config, arrays = router.state()
    stats = list(router._tasks.values())
    old = {k: v for k, v in arrays.items() if k != "scatter_packed"}
    old["scatter"] = router._scatter.copy()
    old["comp_mean"] = np.concatenate([s.means for s in stats]).astype(np.float32)
    old["task_residual"] = np.stack([s.residual for s in stats])
    loaded = router_from_state(json.loads(json.dumps(config)), old)
    assert same_routing(router.route(queries), loaded.route(queries))
    loaded.add_task(4, *train[4])
    loaded.remove_task(0)
    assert router_from_state(*loaded.state()).route(queries).task_ids.shape == (len(queries),)


@pytest.mark.parametrize("mean_bits", [6, 8, 16])
def test_lda_compact_statistics_route_like_float64_ones(mean_bits):
    """float32 scatter and 6-bit, 8-bit or float16 means, kept in memory as saved, against float64
    statistics of the same keys: the same decisions on >= 99.9% of inputs (8-bit: 99.5%, 6-bit: 99%, the
    rest near-ties, accuracy within half a point). These tasks differ along low-variance
    directions, which whitening magnifies: 8-bit means without their outlier components kept
    exactly route 7 points worse here."""
    train, queries, truth = whitened_apart(seed=3, n_tasks=20, n=120)
    router = build(train, mean_bits=mean_bits)
    exact = build(train)
    scatter, means = np.zeros((DIM, DIM)), {}
    for t, (keys, labels) in enumerate(train):
        x = keys.astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        cls = np.unique(labels)
        m = np.stack([x[labels == c].mean(axis=0) for c in cls])
        d = x - m[np.searchsorted(cls, labels)]
        scatter += d.T @ d
        means[t] = m.astype(np.float32)
    exact._scatter = scatter
    for t, stats in exact._tasks.items():  # float32 means, no codes
        exact._tasks[t] = TaskStats(stats.labels, stats.counts, means[t], stats.factor, stats.residual)
    exact._cache = None
    got, ref = router.route(queries, top=1).task_ids, exact.route(queries, top=1).task_ids
    assert (got == ref).mean() >= {16: 0.999, 8: 0.995, 6: 0.99}[mean_bits], (got == ref).mean()
    assert abs((got == truth).mean() - (ref == truth).mean()) <= 0.005
    assert (ref == truth).mean() > 0.5  # a routing problem with errors to disagree on
    loaded = router_from_state(*router.state())
    assert same_routing(router.route(queries), loaded.route(queries))


# -- scale: incremental whitening and an approximate index of whitened means ----------------


def test_lda_large_banks_update_incrementally_and_refresh_when_doubled(monkeypatch):
    monkeypatch.setattr(gaussian, "EXACT_WHITENING_MAX_COMPONENTS", 8)
    train, queries, truth = shared_covariance_tasks(n_tasks=40, n=40, seed=4)
    router = build(train[:10])
    router.route(queries[:1])  # whitening computed with 10 tasks (400 keys)
    whiten = router._cache["whiten"]
    for t in range(10, 19):  # 760 keys < 2 x 400: applied incrementally
        router.add_task(t, *train[t])
        r = router.route(queries[truth == t])
        assert router._cache["whiten"] is whiten
        assert (r.task_ids == t).mean() >= 0.9  # a task added incrementally is routed to
    router.remove_task(3)
    assert router._cache["whiten"] is whiten and 3 not in router.route(queries).candidates
    router.add_task(19, *train[19])
    router.add_task(20, *train[20])  # 20 tasks = 800 keys >= 2 x 400: refreshed
    router.route(queries[:1])
    assert router._cache["whiten"] is not whiten and router._cache["keys_at"] == 20 * 40
    for t in range(21, 40):
        router.add_task(t, *train[t])
        router.route(queries[:1])
    exact = build([train[t] if t != 3 else None for t in range(40)], skip=3)
    keep = truth != 3
    got = router.route(queries[keep], top=1).task_ids
    ref = exact.route(queries[keep], top=1).task_ids
    assert (got == ref).mean() >= 0.98 and (got == truth[keep]).mean() >= 0.95
    loaded = router_from_state(*router.state())  # a loaded router starts from a fresh whitening
    assert (loaded.route(queries[keep], top=1).task_ids == ref).mean() == 1.0


def test_lda_rebuilds_past_the_exact_regime_hand_freed_heap_back(monkeypatch):
    calls = []
    monkeypatch.setattr(gaussian, "EXACT_WHITENING_MAX_COMPONENTS", 8)
    monkeypatch.setattr(gaussian, "release_freed_memory", lambda: calls.append(1) or True)
    train, queries, _ = shared_covariance_tasks(n_tasks=10, n=40, seed=4)
    build(train[:4]).route(queries[:1])  # 8 class means: exact regime, rebuilt at every change
    assert calls == []
    build(train).route(queries[:1])  # 20 means: the rare rebuild of a large router trims
    assert calls == [1]


@pytest.mark.skipif(heap._malloc_trim() is None, reason="no glibc malloc_trim on this platform")
def test_release_freed_memory_returns_free_heap_pages():
    blocks = [bytearray(64 << 10) for _ in range(2000)]  # heap chunks (below the mmap threshold)
    del blocks[::2]  # holes of whole pages between live chunks: only a trim returns them
    assert heap.release_freed_memory()
    del blocks


def test_lda_auto_index_turns_approximate_past_the_flat_limit(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss_index, "AUTO_FLAT_MAX_VECTORS", 60)
    train, queries, truth = shared_covariance_tasks(n_tasks=40, n=40, seed=5)
    router = build(train)  # 80 class means > 60: IVF over the whitened means
    r = router.route(queries, top=1)
    monkeypatch.setattr(gaussian, "REBUILD_BLOCK_MEANS", 7)  # training sample whitened in blocks
    blocks = build(train)
    np.testing.assert_array_equal(blocks.route(queries, top=1).task_ids, r.task_ids)
    ivf = faiss.try_extract_index_ivf(router._cache["index"])
    assert ivf is not None and ivf.nprobe == min(ivf.nlist, gaussian.LDA_NPROBE)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)  # spherical k-means: unit centroids
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-4)
    flat = build(train, index="Flat")
    assert (r.task_ids == flat.route(queries, top=1).task_ids).mean() >= 0.98
    router.remove_task(7)
    assert 7 not in router.route(queries).candidates
    one_list = build(train, nprobe=1)  # the lists scanned per query are an option, and saved
    loaded = router_from_state(*one_list.state())
    assert loaded.config.nprobe == 1
    for each in (one_list, loaded):
        each.route(queries[:1])
        assert faiss.try_extract_index_ivf(each._cache["index"]).nprobe == 1
    fewer = one_list.route(queries, top=1).task_ids
    np.testing.assert_array_equal(loaded.route(queries, top=1).task_ids, fewer)
    assert (fewer == r.task_ids).mean() < 1.0  # one list of 8 is not all of them
    with pytest.raises(InvalidDataError, match="nprobe"):
        make_router("lda", dim=DIM, nprobe=0)


def test_lda_large_auto_index_trains_two_level_lists_and_scores_in_bounded_chunks(monkeypatch):
    import faiss

    monkeypatch.setattr(faiss_index, "AUTO_FLAT_MAX_VECTORS", 60)
    monkeypatch.setattr(faiss_index, "LDA_FLAT_KMEANS_MAX_NLIST", 2)  # 8 lists for 80 means
    calls = []
    real = faiss_index.two_level_lists
    monkeypatch.setattr(faiss_index, "two_level_lists", lambda ivf, x: calls.append(len(x)) or real(ivf, x))
    train, queries, truth = shared_covariance_tasks(n_tasks=40, n=40, seed=5)
    router = build(train)
    r = router.route(queries, top=1)
    ivf = faiss.try_extract_index_ivf(router._cache["index"])
    assert calls == [80] and ivf.nlist > 2 and ivf.quantizer.ntotal == ivf.nlist
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)  # spherical at both levels
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-4)
    flat = build(train, index="Flat")
    assert (r.task_ids == flat.route(queries, top=1).task_ids).mean() >= 0.98
    monkeypatch.setattr(faiss_index, "COARSE_SCORES_MAX", 3 * ivf.nlist)  # 3 queries per coarse step
    assert same_routing(router.route(queries, top=1), r)


def test_class_log_posterior_answers_within_a_task_and_survives_a_reload():
    """The router's class means and shared covariance classify a task's own labels: a
    distribution over that task's classes, right on held-out keys, the same after a reload."""
    tasks, _, _ = shared_covariance_tasks(n=160)
    router = make_router("lda", dim=DIM)
    for t, (keys, labels) in enumerate(tasks):
        router.add_task(t, keys[:80], labels[:80])
    held_out, labels = tasks[3][0][80:], tasks[3][1][80:]
    classes, logp = router.class_log_posterior(held_out, 3)
    assert sorted(classes.tolist()) == [0, 1] and logp.shape == (80, 2)
    assert np.allclose(np.exp(logp).sum(axis=1), 1.0)
    assert (classes[logp.argmax(axis=1)] == labels).mean() >= 0.9
    loaded = router_from_state(*router.state())
    assert np.allclose(loaded.class_log_posterior(held_out, 3)[1], logp, atol=1e-6)
    with pytest.raises(UnknownTaskError):
        router.class_log_posterior(held_out, 99)
