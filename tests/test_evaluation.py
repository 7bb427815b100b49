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
