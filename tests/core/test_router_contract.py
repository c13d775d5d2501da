"""The contract every registered router keeps: a new registration is tested here without a new file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DIM, N_TASKS, build_router, clustered, random_directions, same_routing

from promptbank.errors import BankFormatError, InvalidDataError, TaskExistsError, UnknownTaskError
from promptbank.routing import ROUTERS, make_router, router_from_state

# every registered router with its defaults, plus option sets that change what it stores
CASES = [(name, {}) for name in ROUTERS.names()] + [
    ("knn", {"summary": "all", "per_class": True}),
    ("gaussian", {"per_class": True}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CASES]


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.mark.parametrize("strategy,options", CASES, ids=IDS)
def test_routes_separated_tasks_and_forgets_removed_ones(strategy, options, data):
    train, queries, truth = data
    router = build_router(strategy, train, **options)
    assert router.task_ids() == list(range(N_TASKS)) and len(router) == N_TASKS and 3 in router
    r = router.route(queries, top=3)
    assert r.task_ids.dtype == np.int64 and r.candidates.shape == (len(queries), 3)
    assert r.scores.dtype == np.float32 and r.candidate_scores.shape == (len(queries), 3)
    assert (r.task_ids == truth).mean() >= 0.99
    assert np.array_equal(r.candidates[:, 0], r.task_ids)
    assert np.all((r.candidate_scores >= 0) & (r.candidate_scores <= 1 + 1e-6))
    assert np.all(np.diff(r.candidate_scores, axis=1) <= 1e-6)  # best first

    router.remove_task(2)
    assert router.task_ids() == [0, 1, 3, 4] and 2 not in router
    after = router.route(queries, top=3)
    assert not (after.candidates == 2).any()
    others = truth != 2
    assert (after.task_ids[others] == truth[others]).mean() >= 0.99


@pytest.mark.parametrize("strategy,options", CASES, ids=IDS)
def test_state_round_trips_its_config_and_routes_identically(strategy, options, data):
    train, queries, _ = data
    router = build_router(strategy, train[:4], **options)
    config, arrays = router.state()
    config = json.loads(json.dumps(config))  # plain JSON
    assert config["strategy"] == strategy
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "biuf" for a in arrays.values())
    loaded = router_from_state(config, {k: a.copy() for k, a in arrays.items()})
    assert type(loaded) is type(router) and loaded.config == router.config
    assert same_routing(router.route(queries), loaded.route(queries))
    for r in (router, loaded):  # both keep evolving the same way
        r.add_task(4, *train[4])
        r.remove_task(1)
    assert same_routing(router.route(queries), loaded.route(queries))


@pytest.mark.parametrize("strategy,options", CASES, ids=IDS)
def test_an_empty_router_saves_loads_and_learns(strategy, options, data):
    """A router with no task yet (a new bank, or every task removed) saves and loads."""
    train, queries, truth = data
    router = make_router(strategy, dim=DIM, **options)
    loaded = router_from_state(*router.state())
    assert len(loaded) == 0 and loaded.config == router.config
    for t in range(N_TASKS):
        loaded.add_task(t, *train[t])
    assert (loaded.route(queries).task_ids == truth).mean() >= 0.99


@pytest.mark.parametrize("strategy,options", CASES, ids=IDS)
def test_merge_routes_like_adding_every_task_in_turn(strategy, options, data):
    """Two routers built apart (ids 0.. each) merge into one that routes as the sequential build."""
    train, queries, _ = data
    sequential = build_router(strategy, train, **options)
    merged = build_router(strategy, train[:2], **options)
    other = build_router(strategy, train[2:], **options)
    other_before = other.state()
    merged.merge(other, {t: t + 2 for t in other.task_ids()})
    assert merged.task_ids() == sequential.task_ids()
    a, b = sequential.route(queries, top=3), merged.route(queries, top=3)
    assert np.array_equal(a.task_ids, b.task_ids) and np.array_equal(a.candidates, b.candidates)
    np.testing.assert_allclose(a.candidate_scores, b.candidate_scores, atol=1e-4)
    assert json.dumps(other.state()[0]) == json.dumps(other_before[0])  # the other router is not changed
    merged.remove_task(3)  # merged tasks are ordinary tasks
    assert not (merged.route(queries).candidates == 3).any()
    with pytest.raises(TaskExistsError):
        merged.merge(other, {t: t for t in other.task_ids()})  # ids 2 and 4 are taken
    with pytest.raises(InvalidDataError, match="every task"):
        merged.merge(other, {2: 10})
    with pytest.raises(InvalidDataError, match="different configs"):
        make_router(strategy, dim=DIM, **options).merge(make_router(strategy, dim=DIM, temperature=0.37), {})


@pytest.mark.parametrize("strategy,options", CASES, ids=IDS)
def test_unknown_threshold_flags_inputs_of_no_task(strategy, options, data):
    train, queries, _ = data
    router = build_router(strategy, train, **options)
    far = random_directions(50)
    assert (router.route(far).task_ids >= 0).all()  # no threshold: everything routed
    router.unknown_threshold = float(np.quantile(router.route(queries).closeness, 0.01))
    r_far = router.route(far)
    assert (r_far.task_ids == -1).mean() >= 0.9
    assert (r_far.candidates[:, 0] >= 0).all()  # candidates kept for re-scoring
    assert (router.route(queries).task_ids >= 0).mean() >= 0.98
    loaded = router_from_state(*router.state())
    assert loaded.unknown_threshold == router.unknown_threshold


@pytest.mark.parametrize("strategy", ROUTERS.names())
def test_bad_input_gets_one_clear_error(strategy, data):
    train, queries, _ = data
    router = make_router(strategy, dim=DIM)
    empty = router.route(queries[:3], top=2)
    assert (empty.task_ids == -1).all() and empty.candidates.shape == (3, 2)
    router.add_task(7, train[0][0])
    with pytest.raises(TaskExistsError, match="already"):
        router.add_task(7, train[1][0])
    with pytest.raises(UnknownTaskError, match="not in the router"):
        router.remove_task(8)
    with pytest.raises(InvalidDataError, match="dimension"):
        router.add_task(9, train[1][0][:, :10])
    with pytest.raises(InvalidDataError):
        router.add_task(9, train[1][0], labels=np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidDataError):
        router.add_task(-1, train[1][0])
    with pytest.raises(InvalidDataError):
        router.route(queries[:, :10])
    with pytest.raises(InvalidDataError, match="top"):
        router.route(queries, top=0)
    with pytest.raises(InvalidDataError, match="unknown option"):
        make_router(strategy, dim=DIM, colour="blue")
    with pytest.raises(InvalidDataError, match="dimension"):
        make_router(strategy, dim=0)
    assert router.task_ids() == [7]


@pytest.mark.parametrize("strategy", ROUTERS.names())
def test_a_damaged_state_is_a_format_error(strategy, data):
    train, _, _ = data
    config, arrays = build_router(strategy, train[:2]).state()
    with pytest.raises(BankFormatError):
        router_from_state({k: v for k, v in config.items() if k != "dim"}, arrays)
    with pytest.raises(BankFormatError):
        router_from_state({**config, "dim": -3}, arrays)
