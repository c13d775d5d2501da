"""The named task streams of benchmarks.md, with their task orders.

An order is part of a stream's definition: results are only comparable between runs of the
same stream *and* order, so each order has a fixed number (the literature's numbers where
the stream comes from the literature).
"""

from __future__ import annotations

from dataclasses import dataclass

from promptbank.errors import InvalidDataError
from promptbank.registry import Registry

from .sources import TASKS


@dataclass(frozen=True)
class StreamDef:
    """A named sequence of tasks, in one or more fixed orders."""

    name: str
    orders: dict[int, tuple[str, ...]]
    online: bool
    description: str

    @property
    def default_order(self) -> int:
        return min(self.orders)


_OFFLINE_9 = (
    "bbc",
    "rotten_tomatoes",
    "trec",
    "sms_spam",
    "reuters_r8",
    "vader_amazon",
    "tweet_sentiment",
    "20newsgroups",
    "election_tweets",
)
_LONG = {
    4: "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews multirc yahoo",
    5: "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp amazon yahoo",
    6: "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc boolq wic",
}

_STREAMS = [
    StreamDef(
        "offline-5",
        {1: ("bbc", "rotten_tomatoes", "trec", "sms_spam", "reuters_r8")},
        False,
        "quick, diverse offline stream that finishes on a 2-core CPU (the default main job)",
    ),
    StreamDef(
        "offline-9",
        {
            1: _OFFLINE_9,
            # 2: near neighbours back to back (news: reuters/bbc/20ng; sentiment:
            #    vader_amazon/rotten_tomatoes/tweet_sentiment; tweets: tweet_sentiment/election).
            2: (
                "reuters_r8",
                "bbc",
                "20newsgroups",
                "vader_amazon",
                "rotten_tomatoes",
                "tweet_sentiment",
                "election_tweets",
                "trec",
                "sms_spam",
            ),
            # 3: near neighbours as far apart as possible, starting from a different task.
            3: (
                "tweet_sentiment",
                "sms_spam",
                "bbc",
                "trec",
                "vader_amazon",
                "election_tweets",
                "20newsgroups",
                "rotten_tomatoes",
                "reuters_r8",
            ),
        },
        False,
        "the full offline stream; near neighbours (bbc/reuters news, rotten_tomatoes/"
        "vader_amazon sentiment) make routing hard. Order 1 as listed in benchmarks.md, "
        "order 2 puts neighbours back to back, order 3 spreads them apart",
    ),
    StreamDef(
        "vader-4",
        {1: ("vader_tweets", "vader_movies", "vader_amazon", "vader_nyt")},
        False,
        "domain-incremental: positive/negative in four domains",
    ),
    StreamDef(
        "split-20ng",
        {1: ("20ng_comp", "20ng_rec", "20ng_sci", "20ng_talk", "20ng_misc")},
        False,
        "20 Newsgroups split by hierarchy (comp/rec/sci/talk/alt+misc+soc): the hardest routing",
    ),
    StreamDef(
        "offline-mixed",
        {1: ("rotten_tomatoes", "bbc_headline", "trec", "movie_reply", "sms_spam")},
        False,
        "classification and text-to-text tasks in one bank: generated headlines and film replies (ROUGE-L) "
        "between label tasks. bbc_headline stands in for bbc: the two share their articles",
    ),
    StreamDef(
        "cl-standard",
        {
            1: ("dbpedia", "amazon", "yahoo", "agnews"),
            2: ("dbpedia", "amazon", "agnews", "yahoo"),
            3: ("yahoo", "amazon", "agnews", "dbpedia"),
        },
        True,
        "the standard LLM continual-learning benchmark (online)",
    ),
    StreamDef(
        "cl-standard-5",
        {
            4: ("agnews", "yelp", "amazon", "yahoo", "dbpedia"),
            5: ("yelp", "yahoo", "amazon", "dbpedia", "agnews"),
            6: ("dbpedia", "yahoo", "agnews", "amazon", "yelp"),
        },
        True,
        "the 5-dataset version used with BERT (online)",
    ),
    StreamDef(
        "long-15",
        {k: tuple(v.split()) for k, v in _LONG.items()},
        True,
        "the 15-task long sequence (online)",
    ),
]

#: Every named stream, by name.
STREAMS: Registry[StreamDef] = Registry("stream")
for _stream in _STREAMS:
    STREAMS.register(_stream.name)(_stream)

for _s in _STREAMS:  # a typo in a stream must fail at import, not mid-run
    for _order in _s.orders.values():
        _unknown = [t for t in _order if t not in TASKS]
        if _unknown:
            raise RuntimeError(f"stream {_s.name} names unknown tasks {_unknown}")
        if _s.online != any(TASKS[t].online for t in _order):
            raise RuntimeError(f"stream {_s.name}: online flag disagrees with its tasks")


def stream_tasks(name: str, order: int | None = None) -> list[str]:
    """Task names of stream ``name`` in ``order`` (default: the stream's first order)."""
    stream = STREAMS.get(name)
    key = stream.default_order if order is None else order
    if key not in stream.orders:
        raise InvalidDataError(
            f"stream {name!r} has no order {order!r}. Valid orders: {', '.join(map(str, sorted(stream.orders)))}"
        )
    return list(stream.orders[key])
