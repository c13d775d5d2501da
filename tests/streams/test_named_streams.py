"""Named streams and their orders, checked against the project's benchmark definition."""

from __future__ import annotations

import pytest

from promptbank.errors import InvalidDataError
from streams.named import STREAMS, StreamDef, stream_tasks
from streams.sources import TASKS

# The streams and orders of the benchmark definition the project was given (the task orders of
# the continual-learning papers: Progressive Prompts' orders 1-6), written out independently of
# streams/named.py so that a changed order fails here ("ag" in the papers is the agnews task).
STREAM_ORDERS = {
    "offline-5": {1: "bbc rotten_tomatoes trec sms_spam reuters_r8"},
    "vader-4": {1: "vader_tweets vader_movies vader_amazon vader_nyt"},
    "split-20ng": {1: "20ng_comp 20ng_rec 20ng_sci 20ng_talk 20ng_misc"},
    "offline-mixed": {1: "rotten_tomatoes bbc_headline trec movie_reply sms_spam"},  # text-to-text among labels
    "cl-standard": {
        1: "dbpedia amazon yahoo agnews",
        2: "dbpedia amazon agnews yahoo",
        3: "yahoo amazon agnews dbpedia",
    },
    "cl-standard-5": {
        4: "agnews yelp amazon yahoo dbpedia",
        5: "yelp yahoo amazon dbpedia agnews",
        6: "dbpedia yahoo agnews amazon yelp",
    },
    "long-15": {
        4: "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews multirc yahoo",
        5: "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp amazon yahoo",
        6: "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc boolq wic",
    },
}
OFFLINE_9_ORDER_1 = (
    "bbc rotten_tomatoes trec sms_spam reuters_r8 vader_amazon tweet_sentiment 20newsgroups election_tweets".split()
)


def test_exactly_the_named_streams():
    assert set(STREAMS) == set(STREAM_ORDERS) | {"offline-9"}
    assert all(isinstance(s, StreamDef) and s.name == n and s.description for n, s in STREAMS.items())


@pytest.mark.parametrize("name", sorted(STREAM_ORDERS))
def test_orders_match_benchmarks_md(name):
    expected = {k: v.split() for k, v in STREAM_ORDERS[name].items()}
    assert {k: list(v) for k, v in STREAMS[name].orders.items()} == expected
    for order, tasks in expected.items():
        assert stream_tasks(name, order) == tasks
    assert stream_tasks(name) == expected[min(expected)], "default is the first order"


def test_offline_9_orders():
    orders = STREAMS["offline-9"].orders
    assert sorted(orders) == [1, 2, 3]
    assert list(orders[1]) == OFFLINE_9_ORDER_1 == stream_tasks("offline-9")
    assert sorted(orders[2]) == sorted(orders[3]) == sorted(OFFLINE_9_ORDER_1)
    assert len({orders[1], orders[2], orders[3]}) == 3
    assert len({o[0] for o in orders.values()}) == 3, "each order starts from a different task"

    def gap(order, a, b):
        return abs(order.index(a) - order.index(b))

    # Order 2 puts near neighbours back to back, order 3 keeps them apart.
    assert gap(orders[2], "bbc", "reuters_r8") == 1 and gap(orders[2], "rotten_tomatoes", "vader_amazon") == 1
    assert gap(orders[3], "bbc", "reuters_r8") >= 4 and gap(orders[3], "rotten_tomatoes", "vader_amazon") >= 3


def test_every_stream_task_exists_and_online_flags_agree():
    for stream in STREAMS.values():
        for tasks in stream.orders.values():
            assert len(set(tasks)) == len(tasks)
            assert all(t in TASKS for t in tasks), stream.name
            assert stream.online == any(TASKS[t].online for t in tasks)
            assert all(TASKS[t].online == stream.online for t in tasks), "no mixed streams"
    assert [n for n, s in STREAMS.items() if s.online] == ["cl-standard", "cl-standard-5", "long-15"]


def test_long_15_has_15_distinct_tasks_in_each_order():
    for tasks in STREAMS["long-15"].orders.values():
        assert len(tasks) == 15 and set(tasks) == set(STREAMS["long-15"].orders[4])


def test_stream_tasks_returns_a_copy():
    tasks = stream_tasks("offline-5")
    tasks.append("oops")
    assert stream_tasks("offline-5") == STREAM_ORDERS["offline-5"][1].split()


def test_unknown_stream_and_order():
    with pytest.raises(InvalidDataError, match=r"unknown stream 'offline-6'.*offline-5.*long-15"):
        stream_tasks("offline-6")
    with pytest.raises(InvalidDataError, match=r"no order 1\. Valid orders: 4, 5, 6"):
        stream_tasks("long-15", 1)
    with pytest.raises(InvalidDataError, match=r"Valid orders: 1, 2, 3"):
        stream_tasks("offline-9", 4)
