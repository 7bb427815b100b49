"""Output ensembles of runs (`ner-batch evaluate --run A --run B`): the averaged emissions, a
one-member ensemble equal to its run, and members that cannot be averaged refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_SENTENCES, OTHER_SENTENCE, tiny_splits, train_tiny_runs
from ner_batch.cli import main
from ner_batch.models.tagger import load_model
from ner_batch.training.ensemble import ensemble_tagger, load_members
from ner_batch.training.runs import RunError
from ner_batch.training.trainer import predict_tokens, to_torch

WORDS = [s.tokens for s in tiny_splits()["valid"]]


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_an_ensemble_of_one_run_or_of_a_run_twice_tags_as_the_run(tmp_path, tokenizer, head):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head=head)
    model, tok = load_model(run / "best")
    alone = predict_tokens(model, model.config.word_encoder(tok), WORDS)
    assert [t.labels for t in ensemble_tagger(load_members([run])).tag(WORDS)] == alone
    assert [t.labels for t in ensemble_tagger(load_members([run, run / "best"])).tag(WORDS)] == alone


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_ensemble_emissions_and_crf_scores_are_the_members_mean(tmp_path, tokenizer, head):
    runs = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2), head=head)
    members = load_members(runs)
    tagger = ensemble_tagger(members)
    enc = members[0][0].config.word_encoder(members[0][1])
    batch = enc.collate(enc.windows(WORDS))
    with torch.no_grad():
        outs = [m(**to_torch(batch)).numpy() for m, _ in members]  # each: (B, W, L)
    if head == "softmax":
        expected = np.mean([o - np.log(np.exp(o).sum(-1, keepdims=True)) for o in outs], axis=0)
    else:
        expected = np.mean(outs, axis=0)
        for key in ("transitions", "start", "end"):
            mean = np.mean([m.head.decoder_params()[key] for m, _ in members], axis=0)
            assert np.allclose(tagger.decoder.crf[key], mean)
    assert np.allclose(tagger.emit(batch), expected, atol=1e-5)
    assert not np.allclose(outs[0], outs[1])  # two different members, so the mean is a test


def test_members_that_cannot_share_an_encoder_and_decoder_are_refused(tmp_path, tokenizer):
    (softmax,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    (crf,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    with pytest.raises(RunError, match=f"expected every run of an ensemble to have the head of {softmax} \\('softmax'\\), "
                                       f"got 'crf' in {crf}"):
        load_members([softmax, crf])
    with pytest.raises(RunError, match=f"expected a trained model in {tmp_path / 'none'}, found no tagger.json"):
        load_members([softmax, tmp_path / "none"])


def test_evaluate_scores_an_ensemble_and_says_so(tmp_path, tokenizer):
    runs = [str(r) for r in train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))]
    data = tmp_path / "data"
    data.mkdir()
    for split, sents in (("train", TINY_SENTENCES), ("valid", TINY_SENTENCES + [OTHER_SENTENCE]), ("test", [OTHER_SENTENCE])):
        (data / f"{split}.txt").write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) for s in sents))
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
