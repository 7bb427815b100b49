"""score(): the whole split, its unseen part and its seen part, each scored on its own."""

from __future__ import annotations

import pytest

from ner_batch.evaluation import format_report, score


def test_seen_and_unseen_parts_are_scored_apart():
    gold = [["B-HackOrg", "O"], ["B-Tool", "O"], ["B-Area", "I-Area"]]
    pred = [["B-HackOrg", "O"], ["O", "O"], ["B-Area", "O"]]  # right, missed, wrong boundary
    result = score(gold, pred, unseen=[False, True, True])
    assert result["seen"] == {"sentences": 1, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert result["unseen"]["sentences"] == 2 and result["unseen"]["precision"] == 0.0 and result["unseen"]["recall"] == 0.0
    assert result["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    report = format_report(result)
    assert "micro unseen" in report and "2  sentences not in train" in report
    assert "micro seen" in report and "1  sentences also in train" in report
    assert "seen" not in score(gold, pred) and "micro seen" not in format_report(score(gold, pred))


def test_scores_equal_seqevals_own_functions_on_random_tags():
    """score() extracts the entities once per part; it must give what seqeval's separate
    precision_score / recall_score / f1_score give, malformed I- tags and empty parts included."""
    import random

    from seqeval.metrics import f1_score, precision_score, recall_score

    tags = ["O", "B-Tool", "I-Tool", "B-HackOrg", "I-HackOrg", "I-Area"]
    rng = random.Random(0)
    for trial in range(40):
        n = rng.randint(1, 12)
        lengths = [rng.randint(1, 9) for _ in range(n)]
        gold = [[rng.choice(tags) for _ in range(k)] for k in lengths]
        pred = [[rng.choice(tags) if rng.random() < 0.5 else g for g in s] for s in gold]
        unseen = [rng.random() < (0.5 if trial % 4 else 1.0) for _ in range(n)]  # every 4th: no seen part
        result = score(gold, pred, unseen)
        for part, mask in (("all", None), ("unseen", True), ("seen", False)):
            g = gold if mask is None else [x for x, u in zip(gold, unseen) if u == mask]
            p = pred if mask is None else [x for x, u in zip(pred, unseen) if u == mask]
            got = result if mask is None else result[part]
            expected = [float(f(g, p, zero_division=0)) if g else 0.0 for f in (precision_score, recall_score, f1_score)]
            assert [got["precision"], got["recall"], got["f1"]] == pytest.approx(expected, abs=1e-12), (trial, part)
