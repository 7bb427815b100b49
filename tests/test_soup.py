"""--data-seed and `ner-batch soup`: runs from the same initial weights, averaged into one model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from conftest import tiny_encoder_config, tiny_splits, train_tiny_runs
from ner_batch.cli import main
from ner_batch.models.tagger import load_model
from ner_batch.training import trainer as trainer_module
from ner_batch.training.runs import RunError, format_runs, run_row
from ner_batch.training.soup import average_states, check_ingredients, make_soup, model_part, spread
from ner_batch.training.trainer import TrainSettings, train

_splits = tiny_splits


@pytest.fixture
def unseeded_tiny_backbone(monkeypatch):
    """`train` builds its own model (as with a real backbone), here a tiny random one drawn
    from torch's global generator, so that only the trainer's seeding decides its weights.
    Yields the list of every built model's initial weights."""
    built = []

    def build_model(config, *, pretrained=True):
        from ner_batch.models import tagger

        config.encoder_config = tiny_encoder_config()
        config.lstm_hidden = 16
        model = tagger.build_model(config, pretrained=False)
        built.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(trainer_module, "build_model", build_model)
    yield built


def _train_own(tmp_path, name, **kw):
    settings = TrainSettings(head="crf", epochs=2, lr=3e-3, head_lr=3e-3, batch_size=2, dropout=0.2, **kw)
    return train(settings, tmp_path / name, splits=_splits(), progress=False, log=lambda _: None)


def _weights(run):
    model, _ = load_model(run / "best")
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_data_seed_keeps_the_initial_weights_and_changes_the_path(tmp_path, unseeded_tiny_backbone):
    _train_own(tmp_path, "a", seed=13)
    _train_own(tmp_path, "a-again", seed=13, data_seed=13)  # --data-seed equal to --seed: the same run
    _train_own(tmp_path, "b", seed=13, data_seed=14)
    _train_own(tmp_path, "c", seed=14)
    init_a, init_a2, init_b, init_c = unseeded_tiny_backbone
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)
    assert any(not torch.equal(init_a[k], init_c[k]) for k in init_a)
    wa, wa2, wb = _weights(tmp_path / "a"), _weights(tmp_path / "a-again"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wa2[k]) for k in wa)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["settings"]["data_seed"] == 14


def test_average_states_means_floats_and_keeps_equal_integers():
    a = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1])}
    b = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([0, 1])}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and torch.equal(out["ids"], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected the non-float tensor ids to be equal in every model"):
        average_states([a, {"w": b["w"], "ids": torch.tensor([1, 0])}])
    with pytest.raises(ValueError, match=r"expected w of one shape in every model, got \[\(2,\), \(3,\)\]"):
        average_states([a, {"w": torch.zeros(3), "ids": a["ids"]}])
    with pytest.raises(ValueError, match=r"model 2 differs in \['ids'\]"):
        average_states([a, {"w": b["w"]}])


def test_model_part_names_the_layer_a_weight_belongs_to():
    assert model_part("encoder.embeddings.word_embeddings.weight") == "embeddings"
    assert model_part("encoder.encoder.layer.11.attention.self.query.weight") == "layer 11"  # BERT
    assert model_part("encoder.transformer.layer.3.ffn.lin1.weight") == "layer 3"  # DistilBERT
    assert model_part("encoder.pooler.dense.weight") == "encoder"
    assert model_part("head.emission.weight") == "head"
    assert model_part("head.forward_lstm.weight_ih_l0") == "head"


def test_spread_is_the_runs_distance_from_their_mean_relative_to_their_size():
    same = {"encoder.encoder.layer.0.w": torch.tensor([3.0, 4.0]), "head.b": torch.tensor([1.0]),
            "encoder.embeddings.position_ids": torch.tensor([0, 1])}
    assert spread([same, same]) == {"layer 0": 0.0, "head": 0.0}  # integer buffers are no part of it
    a = {"encoder.encoder.layer.0.w": torch.tensor([1.0, 0.0]), "head.b": torch.tensor([2.0])}
    b = {"encoder.encoder.layer.0.w": torch.tensor([0.0, 1.0]), "head.b": torch.tensor([-2.0])}
    parts = spread([a, b])
    # two runs at relative distance d (||a - b|| over the rms of their norms) spread d / 2
    assert parts["layer 0"] == pytest.approx(2 ** 0.5 / 1.0 / 2) and parts["head"] == pytest.approx(4.0 / 2.0 / 2)
    zeros = {"encoder.encoder.layer.0.w": torch.zeros(2), "head.b": torch.zeros(1)}
    assert spread([zeros, zeros]) == {"layer 0": 0.0, "head": 0.0}


_tiny_runs = train_tiny_runs


def test_a_uniform_soup_is_the_mean_of_the_runs_and_tags_like_a_run(tmp_path, tokenizer):
    runs = _tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))
    result = make_soup(runs, tmp_path / "soup", recipe="uniform", splits=_splits(), log=lambda _: None)
    w1, w2, soup = _weights(runs[0]), _weights(runs[1]), _weights(tmp_path / "soup")
    for k in soup:
        expected = (w1[k] + w2[k]) / 2 if w1[k].is_floating_point() else w1[k]
        assert torch.allclose(soup[k], expected, atol=1e-6), k
    assert result["settings"]["soup"] == {"recipe": "uniform", "select": "valid", "runs": [str(r) for r in runs]}
    assert all(i["in_soup"] for i in result["ingredients"])
    assert {"valid", "test"} <= set(result) and 0.0 <= result["test"]["unseen"]["f1"] <= 1.0
    # how far apart the ingredients are, per part of the model (the tiny encoder has 2 layers)
    assert list(result["spread"]) == ["embeddings", "layer 0", "layer 1", "head"]
    expected = spread([w1, w2])
    assert all(result["spread"][p] == pytest.approx(expected[p], abs=1e-5) and expected[p] > 0 for p in expected)
    row = run_row(tmp_path / "soup")
    assert row["soup"] == 2 and row["finished"] and row["valid_f1"] == round(100 * result["valid"]["f1"], 2)
    assert "soup of 2 runs of 2" in format_runs([row])
    # a soup exports like any run, and its bundle says what it was made of
    from conftest import CHECK_SENTENCES
    from ner_batch.export.build import build_bundle

    manifest = build_bundle(tmp_path / "soup", tmp_path / "bundle", check_sentences=CHECK_SENTENCES, variants=("fp32",),
                            log=lambda _: None)
    assert manifest["training"]["settings"]["soup"]["runs"] == [str(r) for r in runs]


def test_a_greedy_soup_never_scores_below_its_best_run_on_valid(tmp_path, tokenizer):
    runs = _tiny_runs(tmp_path, tokenizer)
    for select, key in (("valid", "valid_f1"), ("valid-unseen", "valid_unseen_f1")):
        result = make_soup(runs, tmp_path / f"soup-{select}", select=select, splits=_splits(), log=lambda _: None)
        best_alone = max(i[key] for i in result["ingredients"])
        soup_score = result["valid"]["f1"] if key == "valid_f1" else result["valid"]["unseen"]["f1"]
        assert soup_score >= best_alone
        members = [i for i in result["ingredients"] if i["in_soup"]]
        assert members and max(members, key=lambda i: i[key])[key] == best_alone  # it starts from the best run
        assert len(result["settings"]["soup"]["runs"]) == len(members)


@pytest.mark.parametrize("head,grid", [("softmax", (-1.0, 0.0, 0.5)), ("crf", (-1.0, 0.0, 0.5)), ("crf", (0.5, 2.0))])
def test_a_greedy_calibrated_soup_is_the_uniform_soup_of_its_runs_calibrated(tmp_path, tokenizer, head, grid):
    """Oracle: the runs it keeps, souped uniformly and calibrated by `calibrate`, give the same shift and scores.
    (A grid without 0 forces a shift, so the folded bias is checked too.)"""
    from ner_batch.training.calibrate import calibrate_run

    runs = _tiny_runs(tmp_path, tokenizer, head=head)
    lines = []
    result = make_soup(runs, tmp_path / "gc", recipe="greedy-calibrated", grid=grid, splits=_splits(), log=lines.append)
    kept = result["settings"]["soup"]["runs"]
    assert kept and len(lines) >= len(runs) + 2  # each run alone, the start, one line per trial, the result
    assert sum(" added" in line or "left out" in line for line in lines) == len(runs) - 1
    if len(kept) > 1:
        make_soup(kept, tmp_path / "u", recipe="uniform", splits=_splits(), log=lambda _: None)
    oracle = calibrate_run(tmp_path / "u" if len(kept) > 1 else kept[0], tmp_path / "uc", grid=grid, splits=_splits(),
                           log=lambda _: None)
    assert result["settings"]["calibrate"]["shift"] == oracle["settings"]["calibrate"]["shift"]
    mine, theirs = _weights(tmp_path / "gc"), _weights(tmp_path / "uc")  # the same weights, shifted bias included
    assert mine.keys() == theirs.keys() and all(torch.allclose(mine[k], theirs[k], atol=1e-6) for k in mine)
    for split in ("valid", "test"):
        assert result[split]["f1"] == pytest.approx(oracle[split]["f1"], abs=1e-9), split
    # the saved model carries the shift: it re-scores to the recorded valid F1 (calibration folded in)
    from ner_batch.training.trainer import evaluate_model

    model, tok = load_model(tmp_path / "gc" / "best")
    again = evaluate_model(model, model.config.windower(tok), _splits()["valid"], _splits()["train"])
    assert again["f1"] == pytest.approx(result["valid"]["f1"], abs=1e-9)
    assert ", O " in format_runs([run_row(tmp_path / "gc")])
    # it never scores below its first run calibrated alone on valid
    first = calibrate_run(kept[0], tmp_path / "first", grid=grid, splits=_splits(), log=lambda _: None)
    assert result["valid"]["f1"] >= first["valid"]["f1"]


def test_runs_that_cannot_be_averaged_are_refused_in_one_line(tmp_path, tokenizer):
    a, b = _tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))
    (other_seed,) = _tiny_runs(tmp_path, tokenizer, data_seeds=(1,), seed=14)
    (crf,) = _tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    reinit = tmp_path / "reinit"  # b's files, as if its top encoder layer had been redrawn before training
    shutil.copytree(b, reinit)
    metrics = json.loads((reinit / "metrics.json").read_text())
    metrics["settings"]["reinit_top"] = 1
    (reinit / "metrics.json").write_text(json.dumps(metrics))
    cases = [
        ([a, reinit], f"expected runs from the same initial weights (one --reinit-top, other --data-seed), got --reinit-top "
                      f"0 in {a} and 1 in {reinit}"),
        ([a], "expected at least 2 runs to average, got 1"),
        ([a, a], "expected distinct runs, got one run twice"),
        ([a, other_seed], "expected runs from the same initial weights (one --seed, other --data-seed), got --seed 13"),
        ([a, crf], f"expected runs of one model definition, but {crf} differs from {a} in head ('softmax' vs 'crf')"),
        ([a, tmp_path / "missing"], "expected a training run with"),
    ]
    for runs, message in cases:
        with pytest.raises(RunError) as err:
            check_ingredients(runs)
        assert message in str(err.value)
        res = CliRunner().invoke(main, ["soup", *map(str, runs), "--out", str(tmp_path / "out")])
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "out").exists()
    (b / "best" / "tagger.json").unlink()  # an unfinished run
    with pytest.raises(RunError, match="found no tagger.json"):
        check_ingredients([a, b])


def test_runs_differing_only_in_training_settings_or_file_vintage_average(tmp_path, tokenizer):
    """Ingredients are compared as load_model reads them: a tagger.json from before the
    ``encoder`` -> ``encoder_config`` rename, other dropout rates (head and encoder) and other
    HF bookkeeping (where and with which transformers) do not stop a soup; a real difference in
    the encoder's shape does, in one line that does not dump the config."""
    a, b = _tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))
    path = b / "best" / "tagger.json"
    fields = json.loads(path.read_text())
    enc = fields.pop("encoder_config")
    enc.update(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3, _name_or_path="/elsewhere", transformers_version="0")
    fields.update(encoder=enc, dropout=0.5)  # the old key, other rates
    path.write_text(json.dumps(fields))
    assert len(check_ingredients([a, b])) == 2
    enc["num_hidden_layers"] += 1
    path.write_text(json.dumps(fields))
    with pytest.raises(RunError) as err:
        check_ingredients([a, b])
    assert str(err.value) == f"expected runs of one model definition, but {b} differs from {a} in encoder_config (its encoder config)"


def test_soup_options_are_checked_by_the_cli(tmp_path):
    res = CliRunner().invoke(main, ["soup", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o"), "--recipe", "mean"])
    assert res.exit_code == 2 and "'mean' is not one of 'uniform', 'greedy', 'greedy-calibrated'" in res.output
    res = CliRunner().invoke(main, ["soup", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Missing argument 'RUN_DIRS...'" in res.output


def test_init_starts_from_a_trained_model(tmp_path, tokenizer):
    (run,) = _tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    # no step moves a weight at learning rate 0: the saved model is the --init model itself
    settings = TrainSettings(head="softmax", epochs=1, lr=0.0, head_lr=0.0, batch_size=2, max_length=64, init=str(run))
    metrics = train(settings, tmp_path / "refit", splits=_splits(), progress=False, log=lambda _: None)
    before, after = _weights(run), _weights(tmp_path / "refit")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert metrics["settings"]["init"] == str(run)
    # and it trains from there
    settings = TrainSettings(head="softmax", epochs=1, lr=3e-3, head_lr=3e-3, batch_size=2, max_length=64,
                             init=str(run / "best"))
    train(settings, tmp_path / "refit2", splits=_splits(), progress=False, log=lambda _: None)
    moved = _weights(tmp_path / "refit2")
    assert any(not torch.equal(before[k], moved[k]) for k in before)


def test_a_wrong_init_is_one_line_and_writes_nothing(tmp_path, tokenizer):
    (run,) = _tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text("APT28 B-HackOrg\nused O\n\nSofacy B-HackOrg\n", encoding="utf-8")
    cases = [
        (["--head", "crf", "--init", str(run)], f"expected --head 'crf' as the model in {run / 'best'} was trained, "
                                                 "found 'softmax' there: pass --head as it was"),
        (["--init", str(run), "--shape-markers"], "expected --shape-markers True as the model"),
        (["--init", str(tmp_path / "nothing")], f"expected a trained model in {tmp_path / 'nothing'}, found no tagger.json"),
        (["--init", str(run), "--max-length", "64", "--data", str(tmp_path / "nodata")],
         "expected DNRTI's train.txt, valid.txt and test.txt in"),
    ]
    for args, message in cases:
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["train", "--out", str(out), "--data", str(data), *args])
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()
