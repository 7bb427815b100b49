"""Output ensembles of runs (`ner-batch evaluate|export --run A --run B`): the averaged emissions, a
one-member ensemble equal to its run, members that cannot be averaged refused by name, and the
ensemble exported as one graph that tags as the PyTorch ensemble does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import CHECK_SENTENCES, TINY_SENTENCES, OTHER_SENTENCE, make_tiny_model, tiny_sentences, tiny_splits, train_tiny_runs
from ner_batch.cli import main
from ner_batch.export.build import build_bundle
from ner_batch.models.ensemble import EnsembleTagger
from ner_batch.models.tagger import load_model
from ner_batch.runtime.tagger import Tagger
from ner_batch.training.ensemble import load_ensemble, load_runs
from ner_batch.training.runs import RunError
from ner_batch.training.trainer import predict_tokens, sentence_tagger, to_torch

WORDS = [s.tokens for s in tiny_splits()["valid"]]


def ensemble_tagger(paths):
    """The tagging path (windows, stitching, NumPy decode) over the runs' averaged emissions."""
    model, tokenizer = load_runs(paths)
    return sentence_tagger(model, model.config.windower(tokenizer))


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_an_ensemble_of_one_run_or_of_a_run_twice_tags_as_the_run(tmp_path, tokenizer, head):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head=head)
    model, tok = load_model(run / "best")
    alone = predict_tokens(model, model.config.windower(tok), WORDS)
    assert [t.labels for t in ensemble_tagger([run]).tag(WORDS)] == alone
    assert [t.labels for t in ensemble_tagger([run, run / "best"]).tag(WORDS)] == alone


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_ensemble_emissions_and_crf_scores_are_the_members_mean(tmp_path, tokenizer, head):
    runs = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2), head=head)
    members = [load_model(r / "best") for r in runs]
    tagger = ensemble_tagger(runs)
    windower = members[0][0].config.windower(members[0][1])
    batch = windower.collate(windower.windows(WORDS))
    with torch.no_grad():
        outs = [m(**to_torch(batch)).numpy() for m, _ in members]  # each: (B, W, L)
    if head == "softmax":
        expected = np.mean([o - np.log(np.exp(o).sum(-1, keepdims=True)) for o in outs], axis=0)
    else:
        expected = np.mean(outs, axis=0)
        for key in ("transitions", "start", "end"):
            mean = np.mean([m.decoder_params()[key] for m, _ in members], axis=0)
            assert np.allclose(tagger.decoder.crf[key], mean)
    assert np.allclose(tagger.emit(batch), expected, atol=1e-5)
    assert not np.allclose(outs[0], outs[1])  # two different members, so the mean is a test


def test_members_that_cannot_share_an_encoder_and_decoder_are_refused(tmp_path, tokenizer):
    (softmax,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    (crf,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    with pytest.raises(RunError, match=f"expected every run of an ensemble to have the head of {softmax} \\('softmax'\\), "
                                       f"got 'crf' in {crf}"):
        load_ensemble([softmax, crf])
    with pytest.raises(RunError, match=f"expected a trained model in {tmp_path / 'none'}, found no tagger.json"):
        load_ensemble([softmax, tmp_path / "none"])


def _tiny_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split, sents in (("train", TINY_SENTENCES), ("valid", TINY_SENTENCES + [OTHER_SENTENCE]), ("test", [OTHER_SENTENCE])):
        (data / f"{split}.txt").write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) for s in sents))
    return data


def test_evaluate_scores_an_ensemble_and_says_so(tmp_path, tokenizer):
    runs = [str(r) for r in train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))]
    data = _tiny_data(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--run", runs[0], "--run", runs[1], "--data", str(data), "--split", "valid"])
    assert res.exit_code == 0, res.output
    assert f"ensemble of 2 runs ({runs[0]}, {runs[1]}) on valid" in res.output
    res = runner.invoke(main, ["evaluate", "--run", runs[0], "--run", runs[1], "--data", str(data), "--split", "valid", "--json"])
    assert res.exit_code == 0 and 0.0 <= json.loads(res.output.strip().splitlines()[-1])["f1"] <= 1.0
    res = runner.invoke(main, ["evaluate", "--run", runs[0], "--run", str(tmp_path / "none"), "--data", str(data)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == f"Error: expected a trained model in {tmp_path / 'none'}, found no tagger.json (is the run finished?)"
    res = runner.invoke(main, ["evaluate", "--data", str(data)])
    assert res.exit_code == 2 and "give --run DIR (one or more) or --bundle DIR, not both and not neither" in res.output


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_an_exported_ensemble_is_one_graph_that_tags_as_the_pytorch_ensemble(tmp_path, tokenizer, tiny_bundles, head):
    ensemble = EnsembleTagger([make_tiny_model(head, seed=7), make_tiny_model(head, seed=8)]).eval()
    manifest = build_bundle([tmp_path / "a", tmp_path / "b"], tmp_path / "x2", model=ensemble, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, eval_split=("tiny", tiny_sentences(), [True, False]), log=lambda m: None)
    assert manifest["ensemble"]["members"] == 2 and manifest["source_run"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert manifest["variants"]["opt"]["fused_operators"].get("Attention") == 4  # 2 layers in each of 2 members
    # Every encoder MatMul of both members is quantized: twice as many as in one tiny model's bundle.
    assert manifest["variants"]["int8"]["quantized_matmuls"] == 2 * tiny_bundles[head][2]["variants"]["int8"]["quantized_matmuls"]
    for variant in ("fp32", "opt"):
        tagger = Tagger(tmp_path / "x2", variant, device="cpu")
        windows = tagger.windower.windows(CHECK_SENTENCES)
        for size in (1, 3, len(windows)):  # traced at batch 2
            batch = tagger.windower.collate(windows[:size])
            with torch.no_grad():
                ref = ensemble(**to_torch(batch)).numpy()
            mask = batch.word_mask.astype(bool)
            np.testing.assert_allclose(tagger.emit(batch)[mask], ref[mask], atol=1e-4, rtol=1e-4)
        expected = sentence_tagger(ensemble, tagger.windower).tag(CHECK_SENTENCES)
        assert [w.labels for w in tagger.tag_words(CHECK_SENTENCES)] == [t.labels for t in expected]
    if head == "crf":
        for key in ("transitions", "start", "end"):
            mean = (ensemble.members[0].decoder_params()[key] + ensemble.members[1].decoder_params()[key]) / 2
            np.testing.assert_allclose(tagger.decoder.crf[key], mean, atol=1e-6)


def test_export_cli_writes_an_ensemble_bundle_and_refuses_runs_that_cannot_join(tmp_path, tokenizer):
    runs = [str(r) for r in train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2), head="crf")]
    (softmax,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    data = _tiny_data(tmp_path)
    runner = CliRunner()
    res = runner.invoke(main, ["export", "--run", runs[0], "--run", runs[1], "--out", str(tmp_path / "export" / "crf-x2"),
                               "--data", str(data)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "export" / "crf-x2" / "manifest.json").read_text())
    assert manifest["ensemble"] == {"members": 2, "combine": "mean emissions and CRF scores"}
    assert [t["settings"]["data_seed"] for t in manifest["training"]] == [1, 2]
    assert 0.0 <= manifest["variants"]["fp32"]["f1"]["f1"] <= 1.0
    empty = tmp_path / "unfinished"
    empty.mkdir()
    for bad, message in (
        ([runs[0], str(softmax)], f"expected every run of an ensemble to have the head of {runs[0]} ('crf'), got 'softmax' in {softmax}"),
        ([runs[0], str(empty)], f"expected a trained model in {empty}, found no tagger.json (is the run finished?)"),
    ):
        res = runner.invoke(main, ["export", "--run", bad[0], "--run", bad[1], "--out", str(tmp_path / "export" / "bad"),
                                   "--data", str(data)])
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert res.output.strip().splitlines()[-1] == f"Error: {message}"
        assert not (tmp_path / "export" / "bad").exists()


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_a_saved_ensemble_loads_as_one_model_with_the_same_emissions(tmp_path, tokenizer, windower, head):
    ensemble = EnsembleTagger([make_tiny_model(head, seed=7), make_tiny_model(head, seed=8)]).eval()
    ensemble.save(tmp_path / "x2", tokenizer)
    loaded, tok = load_model(tmp_path / "x2")
    assert isinstance(loaded, EnsembleTagger) and len(loaded.members) == 2 and tok is not None
    batch = to_torch(windower.collate(windower.windows(WORDS)))
    with torch.no_grad():
        assert torch.allclose(loaded(**batch), ensemble(**batch), atol=1e-6)
    # An ensemble among members gives its own members: three models, averaged equally.
    three = EnsembleTagger([loaded, make_tiny_model(head, seed=9)])
    assert len(three.members) == 3


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_calibrating_several_runs_shifts_their_ensemble_and_saves_it(tmp_path, tokenizer, head):
    from ner_batch.decode import Decoder
    from ner_batch.tagging import SentenceTagger
    from ner_batch.training.calibrate import calibrate_run
    from ner_batch.training.runs import format_runs, run_row

    runs = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2), head=head)
    result = calibrate_run(runs, tmp_path / "x2", grid=(0.0, 0.5, 1.0), splits=tiny_splits(), log=lambda _: None)
    shift = result["settings"]["calibrate"]["shift"]
    assert result["settings"]["ensemble"]["runs"] == [str(r) for r in runs]
    saved, tok = load_model(tmp_path / "x2" / "best")
    assert isinstance(saved, EnsembleTagger) and len(saved.members) == 2
    # The saved ensemble tags as the runs' ensemble with the shift added to its output.
    plain, _ = load_ensemble(runs)
    windower = plain.config.windower(tok)

    @torch.no_grad()
    def shifted(batch):
        out = plain(**to_torch(batch)).numpy()  # shape: (B, W, L)
        out[..., plain.config.labels.index("O")] += shift
        return out

    expected = SentenceTagger(windower, shifted, Decoder(plain.config.labels, plain.decoder_params() or None)).tag(WORDS)
    got = sentence_tagger(saved, windower).tag(WORDS)
    assert [t.labels for t in got] == [t.labels for t in expected]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)  # confidences too (softmax: a per-word constant cancels)
    assert "ensemble of 2 runs of 2" in format_runs([run_row(tmp_path / "x2")])


def test_cli_calibrates_an_ensemble_that_evaluate_and_export_take_as_one_run(tmp_path, tokenizer):
    runs = [str(r) for r in train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))]
    data = _tiny_data(tmp_path)
    runner = CliRunner()
    x2 = str(tmp_path / "runs" / "softmax-x2")
    res = runner.invoke(main, ["calibrate", *runs, "--out", x2, "--data", str(data), "--grid", "0,1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["evaluate", "--run", x2, "--data", str(data), "--split", "valid", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "runs" / "softmax-x2" / "metrics.json").read_text())
    assert json.loads(res.output.strip().splitlines()[-1])["f1"] == metrics["valid"]["f1"]
    res = runner.invoke(main, ["export", "--run", x2, "--out", str(tmp_path / "export" / "softmax-x2"), "--data", str(data)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "export" / "softmax-x2" / "manifest.json").read_text())
    assert manifest["ensemble"]["members"] == 2 and manifest["source_run"] == x2
    assert manifest["training"]["valid_f1"] == metrics["valid"]["f1"]
    # An ensemble cannot start a training, and a broken ensemble.json is one line.
    res = runner.invoke(main, ["train", "--init", x2, "--data", str(data), "--out", str(tmp_path / "runs" / "from-x2")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == (f"Error: expected one trained model for --init, got an ensemble in "
                                                   f"{tmp_path / 'runs' / 'softmax-x2' / 'best'}: give one of its runs")
    broken = tmp_path / "runs" / "softmax-x2" / "best" / "ensemble.json"
    for text in ('{"members": ["../elsewhere"]}', "not json", '{"members": []}'):
        broken.write_text(text)
        res = runner.invoke(main, ["evaluate", "--run", x2, "--data", str(data)])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert res.output.strip().splitlines()[-1].startswith(f"Error: {broken}: expected a JSON object with a list of 'members'"
                                                              if text == "not json" else
                                                              f"Error: {broken}: expected 'members' to be a non-empty list")


def test_a_saved_ensemble_whose_members_disagree_is_one_line_for_export_and_evaluate(tmp_path, tokenizer):
    import shutil

    runs = tmp_path / "runs"
    EnsembleTagger([make_tiny_model("softmax", seed=7), make_tiny_model("softmax", seed=8)]).save(runs / "x2" / "best", tokenizer)
    shutil.rmtree(runs / "x2" / "best" / "member-1")
    make_tiny_model("crf", seed=8).save(runs / "x2" / "best" / "member-1", tokenizer)  # replaced by hand: another head
    data = _tiny_data(tmp_path)
    runner = CliRunner()
    message = "Error: expected every model of an ensemble to have the head of model 0 ('softmax'), got 'crf' in model 1"
    for args in (["export", "--run", str(runs / "x2"), "--out", str(tmp_path / "export" / "x2")],
                 ["evaluate", "--run", str(runs / "x2")]):
        res = runner.invoke(main, args + ["--data", str(data)])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert res.output.strip().splitlines()[-1] == message
    assert not (tmp_path / "export" / "x2").exists()
