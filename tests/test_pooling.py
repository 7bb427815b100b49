"""Word pooling: a word's vector from its pieces' states (first, last or mean), in the graph."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import CHECK_SENTENCES, make_tiny_model, save_tiny_backbone, tiny_sentences, write_tiny_data
from ner_batch.cli import main
from ner_batch.encoding import Windower
from ner_batch.models import TaggerConfig
from ner_batch.models.tagger import load_model, pool_words
from ner_batch.training.trainer import TrainSettings, predict_tokens, to_torch, train

POOLINGS = ["first", "last", "mean"]
SENTENCES = [
    "The Lazarus Group deployed PowerShell loaders and Cobalt Strike beacons via CVE-2017-11882 .".split(),
    ["Hi"],
    "APT28 used X-Agent".split(),
]


def _oracle(states: np.ndarray, window, how: str) -> np.ndarray:
    """One window's word vectors, word by word from its piece list: (W, H)."""
    bounds = list(window.word_index) + [window.n_tokens - 1]  # one [SEP] after the words
    out = []
    for w in range(window.n_words):
        pieces = states[bounds[w] : bounds[w + 1]]  # shape: (P, H)
        out.append({"first": pieces[0], "last": pieces[-1], "mean": pieces.mean(0)}[how])
    return np.stack(out)


@pytest.mark.parametrize("markers", [False, True])
@pytest.mark.parametrize("how", POOLINGS)
def test_pooling_matches_a_word_by_word_oracle_and_batched_equals_one_by_one(how, markers, tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, 64, shape_markers=markers)
    windows = windower.windows(SENTENCES)
    assert any(b - a > 1 for w in windows for a, b in zip(w.word_index, w.word_index[1:]))  # multi-piece words
    batch = to_torch(windower.collate(windows))
    torch.manual_seed(0)
    states = torch.randn(len(windows), batch["input_ids"].size(1), 8)  # shape: (B, T, H)
    together = pool_words(states, batch["word_index"], batch["word_mask"], batch["attention_mask"], how)
    for i, w in enumerate(windows):
        expected = _oracle(states[i, : w.n_tokens].numpy(), w, how)
        np.testing.assert_allclose(together[i, : w.n_words].numpy(), expected, rtol=1e-6, atol=1e-6)
        alone = to_torch(windower.collate([w]))
        one = pool_words(states[i : i + 1, : w.n_tokens], alone["word_index"], alone["word_mask"], alone["attention_mask"], how)
        np.testing.assert_allclose(one[0].numpy(), expected, rtol=1e-6, atol=1e-6)
    if how == "mean":  # padding words cover no piece
        padded = ~batch["word_mask"].bool()
        assert padded.any() and not together[padded].abs().sum()


def test_last_pooling_takes_a_marked_words_marker_and_the_last_word_stops_before_the_special_piece(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, 64, shape_markers=True)
    [w] = windower.windows([["Cobalt", "strike", "."]])
    batch = to_torch(windower.collate([w]))
    states = torch.arange(w.n_tokens, dtype=torch.float32).reshape(1, -1, 1)  # each piece's state: its position
    last = pool_words(states, batch["word_index"], batch["word_mask"], batch["attention_mask"], "last")[0, :, 0]
    assert w.input_ids[int(last[0])] in windower.marker_ids  # "Cobalt" is Capitalized
    assert int(last[2]) == w.n_tokens - 2  # "." ends just before [SEP]


def test_an_unknown_pooling_is_refused_in_one_line():
    with pytest.raises(ValueError, match="expected word pooling to be one of first, last, mean, got 'median'"):
        make_tiny_model("crf", word_pooling="median")
    with pytest.raises(ValueError, match="expected word pooling first, last or mean, got 'max'"):
        pool_words(torch.zeros(1, 3, 2), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long),
                   torch.ones(1, 3, dtype=torch.long), "max")
    res = CliRunner().invoke(main, ["train", "--word-pooling", "median"])
    assert res.exit_code == 2 and "'median' is not one of 'first', 'last', 'mean'" in res.output


def test_a_model_whose_tokenizer_adds_other_special_pieces_is_refused(tokenizer):
    config = make_tiny_model("softmax", word_pooling="mean").config
    with pytest.raises(ValueError, match=r"expected 2 special pieces after a window's words \(tagger.json suffix_pieces\), "
                                         r"the tokenizer adds 1"):
        dataclasses.replace(config, suffix_pieces=2).windower(tokenizer)
    dataclasses.replace(config, suffix_pieces=2, word_pooling="first").windower(tokenizer)  # first pooling needs no end


@pytest.mark.parametrize("head", ["softmax", "crf"])
@pytest.mark.parametrize("how", ["last", "mean"])
def test_a_pooled_model_exports_and_matches_pytorch_at_other_shapes(head, how, tmp_path, tokenizer):
    from test_export import _assert_bundle_matches_pytorch

    from ner_batch.export.build import VARIANTS, build_bundle

    model = make_tiny_model(head, seed=7, word_pooling=how)
    variants = VARIANTS if how == "mean" else ("fp32", "opt")  # the pooling product must survive quantization too
    manifest = build_bundle(tmp_path / "run", tmp_path / "bundle", model=model, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, eval_split=("tiny", tiny_sentences(), [True, False]),
                            variants=variants, log=lambda m: None)
    assert manifest["word_pooling"] == how and sorted(manifest["variants"]) == sorted(variants)
    for variant in ("fp32", "opt"):
        _assert_bundle_matches_pytorch(tmp_path / "bundle", model, manifest, variant)
    # the pooling changes what the head reads: the same weights pooled by first pieces give other emissions
    first = make_tiny_model(head, seed=7)
    windower = model.config.windower(tokenizer)
    batch = to_torch(windower.collate(windower.windows(CHECK_SENTENCES)))
    with torch.no_grad():
        assert not torch.allclose(model(**batch), first(**batch))


def test_training_with_mean_pooling_says_so_records_it_and_reloads_the_same(tmp_path, tokenizer):
    log: list[str] = []
    splits = {"train": tiny_sentences() * 2, "valid": tiny_sentences(), "test": tiny_sentences()}
    trained = make_tiny_model("crf", word_pooling="mean")
    train(TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0, word_pooling="mean"), tmp_path / "run",
          model=trained, tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    assert ", each word the mean of its pieces' states" in "\n".join(log)
    saved = json.loads((tmp_path / "run" / "best" / "tagger.json").read_text())
    assert saved["word_pooling"] == "mean" and saved["suffix_pieces"] == 1
    loaded, tok = load_model(tmp_path / "run" / "best")
    assert loaded.config.word_pooling == "mean"
    sentences = [s.tokens for s in tiny_sentences()]
    windower = loaded.config.windower(tok)
    batch = to_torch(windower.collate(windower.windows(sentences)))
    trained.eval()  # one epoch: the weights trained in memory are the best epoch's, which the run saved
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), trained(**batch))
    assert predict_tokens(loaded, windower, sentences) == predict_tokens(trained, windower, sentences)


def test_an_old_tagger_json_pools_first_pieces(tmp_path):
    config = make_tiny_model("softmax").config
    config.save(tmp_path)
    data = json.loads((tmp_path / "tagger.json").read_text())
    del data["word_pooling"], data["suffix_pieces"]
    (tmp_path / "tagger.json").write_text(json.dumps(data))
    assert TaggerConfig.load(tmp_path).word_pooling == "first"


def test_the_cli_trains_with_a_pooling_and_init_refuses_another(tmp_path, tokenizer):
    ckpt = save_tiny_backbone(tmp_path / "tiny-bert", tokenizer)
    data = write_tiny_data(tmp_path / "data")
    base = ["train", "--data", str(data), "--backbone", str(ckpt), "--epochs", "1", "--max-length", "32", "--threads", "1"]
    run = tmp_path / "run"
    res = CliRunner().invoke(main, [*base, "--out", str(run), "--word-pooling", "last"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "best" / "tagger.json").read_text())["word_pooling"] == "last"
    out = tmp_path / "out"
    res = CliRunner().invoke(main, [*base, "--out", str(out), "--init", str(run)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"expected --word-pooling 'first' as the model in {run / 'best'} was trained, found 'last' there" in res.output
    assert not out.exists()
