"""The context probe of `evaluate --swap-names`: renaming, donor names, scores, and the CLI."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from conftest import OTHER_SENTENCE, TINY_SENTENCES, write_tiny_data

from ner_batch.cli import main
from ner_batch.data.conll import Sentence
from ner_batch.evaluation import MISSED
from ner_batch.labels import bio_spans
from ner_batch.names import NAME_TYPES, donor_names, name_like
from ner_batch.probe import Swap, format_probe, probe_scores, swap_names

TRAIN = [
    Sentence("APT28 deployed the X-Agent backdoor in 2016 .".split(),
             ["B-HackOrg", "O", "O", "B-Tool", "I-Tool", "O", "B-Time", "O"]),
    Sentence("Lazarus Group used Mimikatz against banks in South Korea .".split(),
             ["B-HackOrg", "I-HackOrg", "O", "B-Tool", "O", "B-Idus", "O", "B-Area", "I-Area", "O"]),
    Sentence("FireEye said Winnti used Winnti and a backdoor .".split(),
             ["B-SecTeam", "O", "B-HackOrg", "O", "B-Tool", "O", "O", "B-Tool", "O"]),
    Sentence("The Poison Ivy RAT was found .".split(), ["O", "B-Tool", "I-Tool", "I-Tool", "O", "O", "O"]),
]


def _valid_bio(labels):
    return all(not lab.startswith("I-") or (i > 0 and labels[i - 1] != "O" and labels[i - 1][2:] == lab[2:])
               for i, lab in enumerate(labels))


def test_donor_names_keep_only_names_train_gives_one_type():
    donors = donor_names(TRAIN)
    assert donors == {"HackOrg": [("APT28",), ("Lazarus",)], "Tool": [("X-Agent",), ("Mimikatz",), ("Poison", "Ivy")],
                      "SecTeam": [("FireEye",)]}  # Winnti is HackOrg and Tool; "backdoor" has no name-like word


@pytest.mark.parametrize("mode", ["synthetic", "cross-type"])
def test_swap_renames_name_mentions_only_and_keeps_their_context(mode):
    donors = donor_names(TRAIN)
    swapped, swaps = swap_names(TRAIN, mode, donors, random.Random(3))
    assert len(swapped) == len(TRAIN)
    # every name mention with a name-like word is renamed, nothing else: 8 of the 9 mentions of name types
    expected = [(i, span) for i, s in enumerate(TRAIN) for span in bio_spans(s.labels)
                if span[2] in NAME_TYPES and any(name_like(w) for w in s.tokens[span[0]:span[1]])]
    assert [(w.sentence, w.before) for w in swaps] == expected and len(swaps) == 8
    for before, after in zip(TRAIN, swapped):
        assert _valid_bio(after.labels)
        mine = [w for w in swaps if w.sentence == TRAIN.index(before)]
        old_spans, new_spans = bio_spans(before.labels), bio_spans(after.labels)
        assert [s[2] for s in old_spans] == [s[2] for s in new_spans]  # same mentions, same gold types, same order
        renamed = {w.after for w in mine}
        for old, new in zip(old_spans, new_spans):
            old_words, new_words = before.tokens[old[0]:old[1]], after.tokens[new[0]:new[1]]
            if new not in renamed:
                assert new_words == old_words
                continue
            # the words that are not name-like (the context inside the mention) keep their order
            assert [w for w in new_words if not name_like(w) and w in old_words] == [w for w in old_words if not name_like(w)]
            assert new_words != old_words
        # the words between mentions are the same
        outside = lambda s: [w for k, w in enumerate(s.tokens) if s.labels[k] == "O"]  # noqa: E731
        assert outside(after) == outside(before)


def test_cross_type_names_point_to_another_type():
    donors = donor_names(TRAIN)
    for seed in range(20):
        swapped, swaps = swap_names(TRAIN, "cross-type", donors, random.Random(seed))
        for w in swaps:
            assert w.donor and w.donor != w.before[2] and w.donor in donors
            s, kind = swapped[w.sentence], w.before[2]
            new_words = s.tokens[w.after[0]:w.after[1]]
            name = tuple(x for x in new_words if name_like(x))
            assert name in donors[w.donor]  # the whole new name, one train name of the donor type
            old = TRAIN[w.sentence].tokens[w.before[0]:w.before[1]]
            generic = [x for x in old if not name_like(x)]
            first = next(k for k, x in enumerate(old) if name_like(x))
            # "Lazarus Group" -> "Mimikatz Group", "Poison Ivy RAT" -> "APT28 RAT": one new name where the old began
            assert new_words == generic[:first] + list(name) + generic[first:]
    swapped, swaps = swap_names(TRAIN, "synthetic", donors, random.Random(0))
    assert all(w.donor == "" for w in swaps)


def test_swap_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"^expected a swap mode among synthetic, cross-type, got 'shuffle'$"):
        swap_names(TRAIN, "shuffle", {}, random.Random(0))
    one_type = {"HackOrg": [("APT28",)]}
    with pytest.raises(ValueError, match=r"^expected train names of at least two name types for --swap-names cross-type, "
                                         r"found names of \['HackOrg'\]$"):
        swap_names(TRAIN, "cross-type", one_type, random.Random(0))
    swapped, swaps = swap_names(TRAIN, "synthetic", {}, random.Random(0))  # synthetic needs no donors
    assert len(swaps) == 8


def test_probe_scores_count_by_hand():
    # three renamed mentions in two sentences: the first found exactly after renaming, the
    # second given its type with a wrong boundary, the third given the new name's type
    swaps = [Swap(0, (0, 1, "HackOrg"), (0, 2, "HackOrg"), "Tool"), Swap(0, (3, 4, "Tool"), (4, 6, "Tool"), "HackOrg"),
             Swap(1, (1, 2, "Tool"), (1, 2, "Tool"), "SecTeam")]
    before = [["B-HackOrg", "O", "O", "B-Tool", "O"], ["O", "B-HackOrg", "O"]]
    after = [["B-HackOrg", "I-HackOrg", "O", "O", "B-Tool", "O", "O"], ["O", "B-SecTeam", "O"]]
    r = probe_scores(swaps, before, after)
    assert r["mentions"] == 3
    assert r["recall_before"] == pytest.approx(2 / 3)  # HackOrg and the first Tool; the second Tool was HackOrg
    assert r["recall_after"] == pytest.approx(1 / 3)
    assert r["typed_right"] == pytest.approx(2 / 3)
    assert r["took_name"] == pytest.approx(1 / 3)
    assert r["per_type"]["Tool"]["got"] == {"Tool": 1, "SecTeam": 1}
    assert r["per_type"]["HackOrg"] == {"mentions": 1, "recall_before": 1.0, "recall_after": 1.0, "typed_right": 1.0,
                                        "took_name": 0.0, "got": {"HackOrg": 1}}
    missed = probe_scores(swaps[2:], before, [after[0], ["O", "O", "O"]])
    assert missed["per_type"]["Tool"]["got"] == {MISSED: 1} and missed["typed_right"] == missed["took_name"] == 0.0
    empty = probe_scores([], before, after)
    assert empty["mentions"] == 0 and empty["recall_after"] == 0.0 and empty["per_type"] == {}
    text = format_probe(r, "cross-type", 0)
    assert text.startswith("context probe: 3 name mentions renamed with names train gives another type (cross-type), "
                           "seed 0: exact-span recall 66.67 -> 33.33, still given their type 66.67, took the new name's type 33.33")
    assert "Tool 2: recall 50% -> 0%, typed Tool 50%; SecTeam 1" in text
    assert format_probe(empty, "synthetic", 4).splitlines() == [
        "context probe: 0 name mentions renamed with made-up names (synthetic), seed 4: exact-span recall 0.00 -> 0.00, "
        "still given their type 0.00"]


def _data(tmp_path, train=TINY_SENTENCES):
    data = write_tiny_data(tmp_path / "data", train)
    lines = ["\n".join(f"{w} {t}" for w, t in zip(*s)) for s in TINY_SENTENCES + [OTHER_SENTENCE]]
    (data / "test.txt").write_text("\n\n".join(lines))  # three sentences: --join 2 leaves one alone
    return data


@pytest.mark.parametrize("join", [1, 2])
def test_evaluate_swap_names_matches_tagging_the_renamed_split_alone(tmp_path, tiny_bundles, join):
    from ner_batch.data.dnrti import load_split
    from ner_batch.runtime.tagger import Tagger

    data = _data(tmp_path)
    crf = str(tiny_bundles["crf"][0])
    runner = CliRunner()
    base = ["evaluate", "--bundle", crf, "--device", "cpu", "--data", str(data), "--bootstrap", "0", "--join", str(join), "--json"]
    plain = json.loads(runner.invoke(main, base).output.strip().splitlines()[-1])
    res = runner.invoke(main, base + ["--swap-names", "cross-type", "--swap-seed", "5"])
    assert res.exit_code == 0, res.output
    probed = json.loads(res.output.strip().splitlines()[-1])
    probe = probed.pop("context_probe")
    assert probed == plain  # the probe adds its scores and changes none of the others
    # by hand: rename with the same seed, tag the renamed sentences alone (same joins), score
    test, _ = load_split(data, "test")
    train, _ = load_split(data, "train")
    swapped, swaps = swap_names(test, "cross-type", donor_names(train), random.Random(5))
    tagger = Tagger(crf, "fp32", "cpu", 0, say=lambda m: None)

    def tag(sents):
        toks = [s.tokens for s in sents]
        seqs = [[w for s in toks[k:k + join] for w in s] for k in range(0, len(toks), join)]
        flat = iter([lab for t in tagger.tag_words(seqs) for lab in t.labels])
        return [[next(flat) for _ in s] for s in toks]

    expected = probe_scores(swaps, tag(test), tag(swapped))
    assert probe == {"mode": "cross-type", "seed": 5, **json.loads(json.dumps(expected))}
    assert probe["mentions"] == 6  # APT28, X-Agent, Lazarus Group, Poison Ivy, Sofacy, Zebrocy
    text = runner.invoke(main, base[:-1] + ["--swap-names", "synthetic"]).output
    assert "context probe: 6 name mentions renamed with made-up names (synthetic), seed 0: exact-span recall" in text


def test_evaluate_swap_names_errors_are_one_line(tmp_path, tiny_bundles):
    only_groups = [(["APT28", "struck", "."], ["B-HackOrg", "O", "O"])]
    data = _data(tmp_path, train=only_groups)
    crf = str(tiny_bundles["crf"][0])
    runner = CliRunner()
    base = ["evaluate", "--bundle", crf, "--device", "cpu", "--data", str(data), "--bootstrap", "0"]
    res = runner.invoke(main, base + ["--swap-names", "cross-type"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == ("Error: expected train names of at least two name types for "
                                                   "--swap-names cross-type, found names of ['HackOrg']")
    res = runner.invoke(main, base + ["--swap-names", "shuffle"])
    assert res.exit_code == 2 and "'shuffle' is not one of 'synthetic', 'cross-type'" in res.output
    res = runner.invoke(main, base + ["--swap-names", "synthetic", "--swap-seed", "-1"])
    assert res.exit_code == 2 and "--swap-seed" in res.output and "x>=0" in res.output
