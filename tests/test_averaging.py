"""Weight averaging (--average): the moving average by hand, the swap in and out, and a
training run that scores and saves the averaged weights with the trained ones beside."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_model, tiny_sentences
from ner_batch.data.conll import Sentence
from ner_batch.training.averaging import WeightAverage
from ner_batch.training.runs import run_row
from ner_batch.training.trainer import TrainSettings, train


def test_the_average_follows_the_ramped_decay_by_hand():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    avg = WeightAverage(layer, decay=0.9)
    expected = torch.ones(1, 2)
    for step, value in enumerate([3.0, -1.0, 5.0, 2.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(value)
        avg.update(layer)
        d = min(0.9, (1 + step) / (10 + step))  # 0.18, 0.25, 0.31, 0.36: the ramp, under 0.9 here
        expected = d * expected + (1 - d) * value
        assert torch.allclose(avg.shadow["weight"], expected), step
    assert avg.current_decay() == pytest.approx(5 / 14)


def test_applied_swaps_the_average_in_and_the_trained_weights_back_even_on_error():
    layer = torch.nn.Linear(3, 2)
    avg = WeightAverage(layer, decay=0.5)
    trained = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(1.0)
    avg.update(layer)
    after_step = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"):
        with avg.applied(layer):
            for k, v in layer.state_dict().items():
                assert torch.allclose(v, avg.shadow[k])
                assert not torch.allclose(v, after_step[k]) and not torch.allclose(v, trained[k])
            raise RuntimeError("inside")
    for k, v in layer.state_dict().items():
        assert torch.equal(v, after_step[k])


def test_a_decay_out_of_range_is_refused():
    with pytest.raises(ValueError, match="expected the weight-average decay strictly between 0 and 1, got 1.0"):
        WeightAverage(torch.nn.Linear(1, 1), 1.0)
    with pytest.raises(ValueError, match=r"expected --average between 0 and 1 \(e.g. 0.999\), or 0 for none, got 1.5"):
        TrainSettings(average=1.5)


def test_train_refuses_a_bad_average_in_one_line(tmp_path):
    from click.testing import CliRunner

    from ner_batch.cli import main

    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), "--average", "-0.5"])
    assert res.exit_code == 2 and "expected --average between 0 and 1" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_training_with_an_average_saves_it_and_scores_the_trained_weights_beside(tmp_path, tokenizer):
    sents = tiny_sentences()
    other = Sentence("Sofacy used Zebrocy against Europe .".split(), ["B-HackOrg", "O", "B-Tool", "O", "B-Area", "O"])
    splits = {"train": sents * 4, "valid": sents + [other], "test": [other]}
    log: list[str] = []
    settings = TrainSettings(head="softmax", epochs=3, lr=3e-3, head_lr=3e-3, batch_size=2, average=0.9)
    model = make_tiny_model("softmax")
    metrics = train(settings, tmp_path / "run", model=model, tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    for e in metrics["epochs"]:
        raw = e["trained_weights"]
        assert set(raw) == {"valid_precision", "valid_recall", "valid_f1", "valid_unseen_f1", "valid_seen_f1",
                            "valid_new_name_recall"}
        assert 0.0 <= raw["valid_f1"] <= 1.0
    text = "\n".join(log)
    assert "moving average (decay 0.9)" in text and "| trained weights: valid F1" in text
    # The model ends with the trained weights; what was saved as best is an average, not those.
    saved = load_file(str(tmp_path / "run" / "best" / "model.safetensors"))
    own = model.state_dict()
    assert any(not torch.allclose(saved[k], own[k]) for k in saved if saved[k].is_floating_point())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]["average"] == 0.9
    row = run_row(tmp_path / "run")  # what `ner-batch runs` shows of it
    assert row["finished"] and row["average"] == 0.9 and 1 <= row["trained_weights"]["best_epoch"] <= 3


def test_training_without_an_average_has_no_trained_weights_entry(tmp_path, tokenizer):
    sents = tiny_sentences()
    splits = {"train": sents, "valid": sents, "test": sents}
    metrics = train(TrainSettings(head="crf", epochs=1, lr=3e-3, head_lr=3e-3, batch_size=2), tmp_path / "run",
                    model=make_tiny_model("crf"), tokenizer=tokenizer, splits=splits, progress=False, log=lambda m: None)
    assert "trained_weights" not in metrics["epochs"][0]
