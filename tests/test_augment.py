"""Mention replacement, name masking, and the span-level type confusion of `evaluate`."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from ner_batch.data.conll import Sentence
from ner_batch.evaluation import (
    MISSED, SPURIOUS, confusion_headline, format_confusion, format_new_names, mention_texts, new_name_recall, type_confusion,
)
from ner_batch.labels import bio_spans
from ner_batch.names import NAME_TYPES, donor_names, name_like, synthetic_name
from ner_batch.training.augment import AugmentSettings, augment, augment_all, mention_pool

TRAIN = [
    Sentence("APT28 deployed the X-Agent backdoor in 2016 .".split(),
             ["B-HackOrg", "O", "O", "B-Tool", "I-Tool", "O", "B-Time", "O"]),
    Sentence("Lazarus Group used Mimikatz against banks .".split(),
             ["B-HackOrg", "I-HackOrg", "O", "B-Tool", "O", "B-Idus", "O"]),
    Sentence("FireEye reported the campaign .".split(), ["B-SecTeam", "O", "O", "B-OffAct", "O"]),
]


def _valid_bio(labels):
    return all(not lab.startswith("I-") or (i > 0 and labels[i - 1] != "O" and labels[i - 1][2:] == lab[2:])
               for i, lab in enumerate(labels))


def test_shares_of_zero_change_nothing():
    pool = mention_pool(TRAIN)
    rng = random.Random(0)
    assert augment_all(TRAIN, pool, AugmentSettings(), rng) == TRAIN
    assert all(augment(s, pool, AugmentSettings(), rng) is s for s in TRAIN)


def test_replacement_draws_a_mention_of_the_same_type_and_keeps_bio_valid():
    pool = mention_pool(TRAIN)
    assert sorted(pool["HackOrg"]) == [("APT28",), ("Lazarus", "Group")]
    rng = random.Random(3)
    seen = Counter()
    for _ in range(200):
        for s in TRAIN:
            out = augment(s, pool, AugmentSettings(replace=1.0), rng)
            assert len(out.tokens) == len(out.labels) and _valid_bio(out.labels)
            kinds = [k for _, _, k in bio_spans(out.labels)]
            assert kinds == [k for _, _, k in bio_spans(s.labels)]  # same types, same order
            for start, end, kind in bio_spans(out.labels):
                assert tuple(out.tokens[start:end]) in pool[kind]
                seen[tuple(out.tokens[start:end])] += 1
            # the words outside mentions are untouched
            outside = [t for i, t in enumerate(out.tokens) if out.labels[i] == "O"]
            assert outside == [t for t, lab in zip(s.tokens, s.labels) if lab == "O"]
    assert seen[("Lazarus", "Group")] and seen[("APT28",)]  # lengths change both ways


def test_masking_rewrites_only_name_like_words_of_name_types():
    pool = mention_pool(TRAIN)
    rng = random.Random(5)
    for _ in range(100):
        out = augment(TRAIN[1], pool, AugmentSettings(mask=1.0), rng)
        assert out.labels == TRAIN[1].labels  # same length: one synthetic word per name-like word
        assert out.tokens[1] == "Group"  # a generic head word stays
        assert out.tokens[0] != "Lazarus" and out.tokens[3] != "Mimikatz"
        assert out.tokens[5] == "banks"  # Idus is not a name type
    out = augment(TRAIN[2], pool, AugmentSettings(mask=1.0), rng)
    assert out.tokens[3] == "campaign"  # OffAct is not a name type
    assert "OffAct" not in NAME_TYPES and "Tool" in NAME_TYPES


def test_name_swap_gives_a_name_of_another_type_and_keeps_the_tags():
    donors = donor_names(TRAIN)  # HackOrg: APT28, Lazarus; Tool: X-Agent, Mimikatz; SecTeam: FireEye
    pool = mention_pool(TRAIN)
    rng = random.Random(2)
    got = Counter()
    for _ in range(200):
        out = augment(TRAIN[1], pool, AugmentSettings(swap=1.0), rng, donors)
        assert _valid_bio(out.labels)
        spans = bio_spans(out.labels)
        assert [k for _, _, k in spans] == ["HackOrg", "Tool", "Idus"]  # same mentions, tags kept
        (h0, h1, _), (t0, t1, _), (i0, i1, _) = spans
        group, tool = tuple(out.tokens[h0:h1 - 1]), tuple(out.tokens[t0:t1])
        assert out.tokens[h1 - 1] == "Group" and out.tokens[i0:i1] == ["banks"]  # head word and Idus stay
        assert group in donors["Tool"] + donors["SecTeam"]  # a group gets a tool's or a team's name, never a group's
        assert tool in donors["HackOrg"] + donors["SecTeam"]
        got[group] += 1
    assert set(got) == {("X-Agent",), ("Mimikatz",), ("FireEye",)}
    # without names of another type (or without donors) a mention stays as it is
    only_groups = augment(TRAIN[1], pool, AugmentSettings(swap=1.0), rng, {"HackOrg": donors["HackOrg"]})
    assert only_groups.tokens[0] == "Lazarus" and only_groups.tokens[3] in ("APT28", "Lazarus")
    assert augment(TRAIN[1], pool, AugmentSettings(swap=1.0), rng) is TRAIN[1]


def test_synthetic_names_take_many_shapes_and_are_single_words():
    rng = random.Random(0)
    names = [synthetic_name(rng) for _ in range(2000)]
    assert all(n and " " not in n for n in names)
    shapes = Counter()
    for n in names:
        shapes["digit"] += any(c.isdigit() for c in n)
        shapes["hyphen"] += "-" in n
        shapes["camel"] += bool(re.match(r"^[A-Z][a-z]+[A-Z][a-z]+$", n))
        shapes["caps"] += n.isupper()
        shapes["lower"] += n.islower()
    assert all(shapes[k] > 100 for k in ("digit", "hyphen", "camel", "caps", "lower")), shapes
    assert len(set(names)) > 1500
    assert name_like("APT28") and name_like("x64") and not name_like("Group") and not name_like("banks")


@pytest.mark.parametrize("replace,mask,message", [
    (1.5, 0.0, "expected the replace share between 0 and 1, got 1.5"),
    (0.0, -0.1, "expected the mask share between 0 and 1, got -0.1"),
    (0.6, 0.6, "expected --mention-replace + --name-mask at most 1, got 0.6 + 0.6"),
])
def test_bad_shares_are_refused_with_the_numbers(replace, mask, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AugmentSettings(replace=replace, mask=mask)
    with pytest.raises(ValueError, match=re.escape("expected --mention-replace + --name-mask + --name-swap at most 1, "
                                                   "got 0.5 + 0.3 + 0.4")):
        AugmentSettings(replace=0.5, mask=0.3, swap=0.4)
    with pytest.raises(ValueError, match=re.escape("expected the swap share between 0 and 1, got 2.0")):
        AugmentSettings(swap=2.0)


def test_training_with_rewrites_sees_different_words_each_epoch(windower):
    from ner_batch.training.trainer import WordStream

    sents = TRAIN * 10
    pool = mention_pool(sents)
    rng = random.Random(1)
    l2i = {lab: i for i, lab in enumerate(sorted({lab for s in sents for lab in s.labels}))}
    epochs = [WordStream(windower, augment_all(sents, pool, AugmentSettings(0.3, 0.3), rng), l2i).examples(rng, 0.0)
              for _ in range(2)]
    ids = [[e.window.input_ids for e in ex] for ex in epochs]
    assert ids[0] != ids[1]
    for ex in epochs:  # tags still line up with the words of every window
        assert all(len(e.tags) == e.window.word_end - e.window.word_start for e in ex)


def test_type_confusion_counts_each_gold_span_once():
    gold = [["B-Tool", "I-Tool", "O", "B-HackOrg", "O", "B-Area", "O"],
            ["B-Tool", "O", "O", "O"]]
    pred = [["B-HackOrg", "I-HackOrg", "O", "B-HackOrg", "I-HackOrg", "O", "O"],  # Tool->HackOrg exact, HackOrg boundary off, Area missed
            ["B-Tool", "O", "B-Time", "O"]]  # Tool exact, Time spurious
    c = type_confusion(gold, pred)
    assert c["matrix"] == {"Area": {MISSED: 1}, "HackOrg": {"HackOrg": 1}, "Tool": {"HackOrg": 1, "Tool": 1},
                           SPURIOUS: {"Time": 1}}
    assert c["exact"] == {"Tool": 1}  # the HackOrg span has the right type, the wrong end
    assert sorted(c["top"]) == sorted([[SPURIOUS, "Time", 1], ["Area", MISSED, 1], ["Tool", "HackOrg", 1]])
    assert confusion_headline(c) == ("largest type confusions (gold -> predicted, spans): Tool -> HackOrg 1; missed spans 1, "
                                     "spurious spans 1 (evaluate --confusions: the table)")
    text = format_confusion(c)
    assert "Tool -> HackOrg 1" in text and f"{SPURIOUS} -> Time 1" in text


def test_type_confusion_pairs_the_most_overlapping_prediction():
    gold = [["B-Tool", "I-Tool", "I-Tool", "O"]]
    pred = [["B-Area", "B-SamFile", "I-SamFile", "O"]]
    assert type_confusion(gold, pred)["matrix"] == {"Tool": {"SamFile": 1}}


def test_new_name_recall_splits_mentions_by_whether_train_tagged_their_text():
    known = mention_texts([s.labels for s in TRAIN], [s.tokens for s in TRAIN])
    assert known == {"apt28", "x-agent backdoor", "2016", "lazarus group", "mimikatz", "banks", "fireeye", "campaign"}
    words = ["Vokrel deployed mimikatz and the Sidewinder implant .".split(),
             "APT28 used Sidewinder .".split()]
    gold = [["B-Tool", "O", "B-Tool", "O", "O", "B-Tool", "O", "O"],
            ["B-HackOrg", "O", "B-Tool", "O"]]
    pred = [["B-HackOrg", "O", "B-Tool", "O", "O", "B-Tool", "I-Tool", "O"],  # new Vokrel -> HackOrg; Sidewinder span too long
            ["B-HackOrg", "O", "B-Tool", "O"]]
    r = new_name_recall(gold, pred, words, known)
    assert r["known"] == {"mentions": 2, "recall": 1.0}  # "mimikatz" (case folded) and "APT28"
    assert r["new"]["mentions"] == 3 and r["new"]["recall"] == pytest.approx(1 / 3)
    assert r["new"]["per_type"] == {"Tool": {"mentions": 3, "recall": pytest.approx(1 / 3), "got": {"Tool": 2, "HackOrg": 1}}}
    text = format_new_names(r)
    assert "new names (mentions whose text is no mention in train): 3, exact-span recall 33.33" in text
    assert "Tool 33% of 3: HackOrg 1" in text


def test_new_name_recall_counts_a_missed_mention_and_refuses_misaligned_words():
    r = new_name_recall([["B-Tool", "O"]], [["O", "O"]], [["Vokrel", "."]], set())
    assert r["new"]["per_type"]["Tool"]["got"] == {MISSED: 1} and r["known"] == {"mentions": 0, "recall": 0.0}
    assert "Tool 0% of 1: missed 1" in format_new_names(r)
    with pytest.raises(ValueError, match="expected 2 words for a sentence's gold tags, got 1"):
        new_name_recall([["B-Tool", "O"]], [["O", "O"]], [["Vokrel"]], set())


@pytest.mark.parametrize("args,message", [
    (["--mention-replace", "0.7", "--name-mask", "0.6"], "expected --mention-replace + --name-mask at most 1, got 0.7 + 0.6"),
    (["--name-mask", "1.5"], "--name-mask"),
    (["--name-swap", "0.5", "--name-mask", "0.6"], "expected --mention-replace + --name-mask + --name-swap at most 1, got 0.0 + 0.6 + 0.5"),
    (["--name-swap", "-0.1"], "--name-swap"),
    (["--resplit", "1.5"], "--resplit"),
    (["--resplit-trim"], "expected --resplit above 0 with --resplit-trim (it trims the entities of re-split sentences), got 0"),
])
def test_train_refuses_bad_shares_in_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from ner_batch.cli import main

    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def _train_one_epoch_seeing_rewrites(tmp_path, tokenizer, monkeypatch, splits=None, **settings) -> list[list[Sentence]]:
    """Train a tiny softmax model one epoch with these settings; the sentences each epoch's rewrites gave."""
    from conftest import make_tiny_model, tiny_splits

    from ner_batch.training import trainer

    seen: list[list[Sentence]] = []

    def spy(sentences, pool, settings, rng, donors=None):
        out = augment_all(sentences, pool, settings, rng, donors)
        seen.append(out)
        return out

    monkeypatch.setattr(trainer, "augment_all", spy)
    trainer.train(trainer.TrainSettings(head="softmax", epochs=1, batch_size=2, seed=1, **settings), tmp_path / "run",
                  model=make_tiny_model("softmax"), tokenizer=tokenizer, splits=splits or tiny_splits(), progress=False,
                  log=lambda _: None)
    return seen


def test_training_swaps_names_with_train_names_of_other_types(tmp_path, tokenizer, monkeypatch):
    """--name-swap reaches the epochs' rewrites: the trainer hands train's donor names over."""
    seen = _train_one_epoch_seeing_rewrites(tmp_path, tokenizer, monkeypatch, name_swap=1.0)
    assert len(seen) == 1
    groups = [tuple(s.tokens[a:b]) for s in seen[0] for a, b, k in bio_spans(s.labels) if k == "HackOrg"]
    # train's groups (APT28, Lazarus Group) now carry its tools' names (X-Agent, Poison Ivy), tags kept
    assert groups and all(g[0] in ("X-Agent", "Poison") for g in groups), groups
    log = (tmp_path / "run" / "train.log").read_text()
    assert "name swap 1.0" in log


def test_resplit_cuts_tokens_as_raw_text_is_cut_and_carries_tags():
    from ner_batch.training.augment import resplit

    s = Sentence(["APT28's", "C&C", "(EternalBlue)", "in", "U.S."], ["B-HackOrg", "O", "B-Tool", "O", "B-Area"])
    out = resplit(s)
    assert out.tokens == ["APT28", "'", "s", "C", "&", "C", "(", "EternalBlue", ")", "in", "U.S", "."]
    assert out.labels == ["B-HackOrg", "I-HackOrg", "I-HackOrg", "O", "O", "O", "B-Tool", "I-Tool", "I-Tool", "O",
                          "B-Area", "I-Area"]
    assert resplit(TRAIN[0]) == TRAIN[0]  # words the splitter keeps whole: nothing changes


def test_resplit_equals_tagging_raw_text_and_keeps_entity_characters():
    """On real sentences: the pieces are the words the runtime's splitter gives the joined text,
    and every entity covers the same characters of it as before, with valid BIO."""
    from conftest import DNRTI
    from ner_batch.data.dnrti import load_split
    from ner_batch.segment import split_document
    from ner_batch.training.augment import resplit

    if not (DNRTI / "train.txt").is_file():
        pytest.skip("needs DNRTI")
    changed = 0
    for s in load_split(DNRTI, "train")[0][:1500]:
        out = resplit(s)
        text = " ".join(s.tokens)
        assert out.tokens == [w for sent in split_document(text)[0] for w in sent] and " ".join(out.tokens).replace(" ", "") == text.replace(" ", "")
        assert _valid_bio(out.labels)

        def chars(tokens, labels):
            starts, pos = [], 0
            for t in tokens:
                pos = text.index(t, pos)
                starts.append((pos, pos + len(t)))
                pos += len(t)
            return [(starts[a][0], starts[b - 1][1], k) for a, b, k in bio_spans(labels)]

        assert chars(out.tokens, out.labels) == chars(s.tokens, s.labels)
        changed += out.tokens != s.tokens
    assert changed > 100  # DNRTI has many tokens the splitter cuts


def test_resplit_trim_tags_the_edges_of_entities_o():
    from ner_batch.training.augment import resplit

    s = Sentence(["APT28's", "C&C", "(EternalBlue)", "in", "U.S.", "Kaspersky", "Lab’s", "“", "Dark", "”", "(", ")"],
                 ["B-HackOrg", "O", "B-Tool", "O", "B-Area", "B-SecTeam", "I-SecTeam", "B-HackOrg", "I-HackOrg", "I-HackOrg",
                  "B-Tool", "I-Tool"])
    out = resplit(s, trim=True)
    assert out.tokens == resplit(s).tokens
    assert list(zip(out.tokens, out.labels)) == [
        ("APT28", "B-HackOrg"), ("'", "O"), ("s", "O"), ("C", "O"), ("&", "O"), ("C", "O"), ("(", "O"), ("EternalBlue", "B-Tool"),
        (")", "O"), ("in", "O"), ("U.S", "B-Area"), (".", "O"), ("Kaspersky", "B-SecTeam"), ("Lab", "I-SecTeam"), ("’", "O"),
        ("s", "O"), ("“", "O"), ("Dark", "B-HackOrg"), ("”", "O"), ("(", "O"), (")", "O")]  # "( )" had nothing to keep
    inner = Sentence(["Lazarus", "(Hidden", "Cobra)", "group"], ["B-HackOrg", "I-HackOrg", "I-HackOrg", "I-HackOrg"])
    assert resplit(inner, trim=True).labels == ["B-HackOrg"] + ["I-HackOrg"] * 5  # punctuation inside a name stays


def test_resplit_trim_keeps_what_trim_span_keeps_on_real_sentences():
    from conftest import DNRTI
    from ner_batch.data.dnrti import load_split
    from ner_batch.segment import trim_span
    from ner_batch.training.augment import resplit

    if not (DNRTI / "train.txt").is_file():
        pytest.skip("needs DNRTI")
    trimmed = 0
    for s in load_split(DNRTI, "train")[0][:1500]:
        cut, out = resplit(s), resplit(s, trim=True)
        assert out.tokens == cut.tokens and _valid_bio(out.labels)
        text, starts, pos = " ".join(cut.tokens), [], 0
        for t in cut.tokens:
            starts.append(pos)
            pos += len(t) + 1
        chars = lambda labels: [(starts[a], starts[b - 1] + len(cut.tokens[b - 1]), k) for a, b, k in bio_spans(labels)]  # noqa: E731
        expected = [(*kept, k) for a, b, k in chars(cut.labels) if (kept := trim_span(text, a, b)) is not None]
        assert chars(out.labels) == expected
        trimmed += out.labels != cut.labels
    assert trimmed > 30  # 42 of these 1500 sentences have an entity with edge punctuation or a possessive


def test_resplit_share_draws_per_sentence_and_leaves_other_draws_alone():
    pool = mention_pool(TRAIN)
    cut = Sentence(["APT28's", "tools"], ["B-HackOrg", "O"])
    rng = random.Random(3)
    outs = [augment(cut, pool, AugmentSettings(resplit=0.5), rng) for _ in range(200)]
    assert 60 < sum(o.tokens != cut.tokens for o in outs) < 140
    assert augment(cut, pool, AugmentSettings(resplit=1.0), random.Random(0)).tokens == ["APT28", "'", "s", "tools"]
    # without --resplit no sentence draws (so runs with mention rewrites only draw as they did before it existed)
    rng = random.Random(5)
    state = rng.getstate()
    assert all(augment(s, pool, AugmentSettings(resplit=0.0), rng) is s for s in TRAIN) and rng.getstate() == state
    with pytest.raises(ValueError, match=re.escape("expected the resplit share between 0 and 1, got 1.5")):
        AugmentSettings(resplit=1.5)


def test_training_resplits_sentences(tmp_path, tokenizer, monkeypatch):
    """--resplit reaches the epochs' sentences, and --teacher refuses it."""
    from conftest import tiny_splits

    from ner_batch.training import trainer

    splits = tiny_splits()
    splits["train"] = [Sentence(["APT28's", "X-Agent", "(C2)", "."], ["B-HackOrg", "B-Tool", "O", "O"])] * 4
    seen = _train_one_epoch_seeing_rewrites(tmp_path, tokenizer, monkeypatch, splits=splits, resplit=1.0)
    assert seen and all(s.tokens == ["APT28", "'", "s", "X-Agent", "(", "C2", ")", "."] for s in seen[0])
    assert "resplit 1.0" in (tmp_path / "run" / "train.log").read_text()
    seen = _train_one_epoch_seeing_rewrites(tmp_path, tokenizer, monkeypatch, splits=splits, resplit=1.0, resplit_trim=True)
    assert seen and all(s.labels == ["B-HackOrg", "O", "O", "B-Tool", "O", "O", "O", "O"] for s in seen[0])
    assert "resplit 1.0 trimmed" in (tmp_path / "run" / "train.log").read_text()
    with pytest.raises(ValueError, match="expected no --mention-replace, --name-mask, --name-swap or --resplit with --teacher"):
        trainer.TrainSettings(head="softmax", resplit=0.2, teachers=("runs/x",))
