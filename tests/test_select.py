"""--select: the valid score that picks the best epoch and that --patience waits for."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import make_tiny_model, tiny_sentences
from ner_batch.cli import main
from ner_batch.data.conll import Sentence
from ner_batch.training.runs import SELECT_SCORES
from ner_batch.training.trainer import TrainSettings, train


def _first_best(history, key):
    scores = [e[key] for e in history]
    return scores.index(max(scores)) + 1


@pytest.mark.parametrize("select", sorted(SELECT_SCORES))
def test_the_best_epoch_is_the_first_maximum_of_the_selected_score(tmp_path, tokenizer, select):
    sents = tiny_sentences()
    other = Sentence("Sofacy used Zebrocy against Europe .".split(), ["B-HackOrg", "O", "B-Tool", "O", "B-Area", "O"])
    splits = {"train": sents * 4, "valid": sents + [other], "test": [other]}
    settings = TrainSettings(head="softmax", epochs=4, lr=3e-3, head_lr=3e-3, batch_size=2, select=select)
    metrics = train(settings, tmp_path / "run", model=make_tiny_model("softmax"), tokenizer=tokenizer, splits=splits,
                    progress=False, log=lambda _: None)
    assert metrics["settings"]["select"] == select
    assert metrics["best_epoch"] == _first_best(metrics["epochs"], SELECT_SCORES[select])
    # the saved best/ is that epoch's model: its valid score is the one recorded for that epoch
    best = metrics["epochs"][metrics["best_epoch"] - 1]
    assert metrics["valid"]["f1"] == pytest.approx(best["valid_f1"])


def test_an_unknown_select_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="expected --select to be one of valid, valid-unseen, new-name-recall, got 'test'"):
        TrainSettings(select="test")
    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), "--select", "test"])
    assert res.exit_code == 2 and "'test' is not one of" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
