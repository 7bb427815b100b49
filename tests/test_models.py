"""Tiny random taggers of both heads: loss goes down, they overfit, they save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import LABELS, make_tiny_model, tiny_sentences
from ner_batch.evaluation import score
from ner_batch.models.crf import reverse_padded
from ner_batch.models.tagger import load_model
from ner_batch.training.trainer import (
    BackboneSettingError, TrainSettings, build_optimizer, encoder_depths, freeze_word_embeddings, make_examples, predict_tokens, tag_tensor, to_torch, train,
)

LABEL2ID = {lab: i for i, lab in enumerate(LABELS)}


def _fit(model, windower, steps, lr=3e-3):
    examples = make_examples(windower, tiny_sentences(), LABEL2ID)
    batch = windower.collate([e.window for e in examples])
    tags = tag_tensor(examples, batch.word_mask.shape[1])
    opt, _ = build_optimizer(model, TrainSettings(lr=lr, head_lr=lr, warmup=0.0), steps)
    losses = []
    model.train()
    for _ in range(steps):
        loss = model.loss(to_torch(batch), tags)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_a_few_steps_lower_the_loss(head, windower):
    losses = _fit(make_tiny_model(head), windower, steps=5)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("head, bidirectional, lstm_hidden", [("softmax", True, 16), ("crf", True, 16), ("crf", False, 16),
                                                              ("crf", True, 0)])
def test_overfits_two_sentences(head, bidirectional, lstm_hidden, windower):
    model = make_tiny_model(head, bidirectional=bidirectional, lstm_hidden=lstm_hidden)
    _fit(model, windower, steps=150)
    sents = tiny_sentences()
    pred = predict_tokens(model, windower, [s.tokens for s in sents])
    assert score([s.labels for s in sents], pred)["f1"] == 1.0


@pytest.mark.parametrize("head, lstm_hidden", [("softmax", 16), ("crf", 16), ("crf", 0)])
def test_save_load_round_trip_gives_identical_predictions(head, lstm_hidden, tmp_path, tokenizer, windower):
    model = make_tiny_model(head, seed=3, lstm_hidden=lstm_hidden)
    model.save(tmp_path / "m", tokenizer)
    loaded, tok2 = load_model(tmp_path / "m")
    assert not list(tmp_path.glob("m/*.bin")) and not list(tmp_path.glob("m/*.pt"))  # no pickles
    batch = to_torch(windower.collate(windower.windows([s.tokens for s in tiny_sentences()])))
    with torch.no_grad():
        assert torch.equal(model(**batch), loaded(**batch))
    assert tok2.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_a_tagger_json_from_before_the_encoder_config_rename_loads_the_same(tmp_path, tokenizer, windower):
    model = make_tiny_model("crf", seed=3)
    model.save(tmp_path / "m", tokenizer)
    path = tmp_path / "m" / "tagger.json"
    data = json.loads(path.read_text())
    assert "encoder" not in data and data["encoder_config"]["hidden_size"] == 32
    data["encoder"] = data.pop("encoder_config")  # the key older runs wrote
    path.write_text(json.dumps(data))
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.encoder_config == model.config.encoder_config
    batch = to_torch(windower.collate(windower.windows([s.tokens for s in tiny_sentences()])))
    with torch.no_grad():
        assert torch.equal(model(**batch), loaded(**batch))


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_emissions_are_word_level_and_batched_equals_one_by_one(head, windower):
    model = make_tiny_model(head, seed=1)
    sentences = [s.tokens for s in tiny_sentences()] + [["Short", "one"]]
    windows = windower.windows(sentences)
    with torch.no_grad():
        together = model(**to_torch(windower.collate(windows)))
        assert together.shape == (3, 9, len(LABELS))
        for i, w in enumerate(windows):
            alone = model(**to_torch(windower.collate([w])))
            assert alone.shape == (1, w.n_words, len(LABELS))
            torch.testing.assert_close(together[i, : w.n_words], alone[0], atol=1e-5, rtol=1e-5)


def test_crf_runs_over_first_subwords(windower):
    """The CRF head sees one emission per word, taken at each word's first piece."""
    model = make_tiny_model("crf", seed=2)
    words = ["Cobalt", "Strike", "beacons"]  # multi-piece words
    [w] = windower.windows([words])
    assert w.n_tokens > len(words) + 2
    captured = {}
    hook = model.head.register_forward_hook(lambda m, args, out: captured.setdefault("in", args[0]))
    with torch.no_grad():
        states = model.encoder(**{k: v for k, v in to_torch(windower.collate([w])).items() if k in ("input_ids", "attention_mask")}).last_hidden_state
        model(**to_torch(windower.collate([w])))
    hook.remove()
    torch.testing.assert_close(captured["in"][0], states[0, w.word_index])
    assert len(model.predict(to_torch(windower.collate([w])))[0]) == len(words)


def test_reverse_padded():
    x = torch.arange(8, dtype=torch.float).view(2, 4, 1)
    out = reverse_padded(x, torch.tensor([3, 1]))
    assert out[..., 0].tolist() == [[2, 1, 0, 3], [4, 5, 6, 7]]


def test_training_loop_writes_metrics_curves_and_best(tmp_path, tokenizer):
    from ner_batch.data.conll import Sentence

    sents = tiny_sentences()
    splits = {"train": sents, "valid": sents, "test": [Sentence(list(s.tokens), list(s.labels)) for s in sents]}
    model = make_tiny_model("crf")
    metrics = train(TrainSettings(head="crf", epochs=3, lr=3e-3, head_lr=3e-3, batch_size=2), tmp_path / "run",
                    model=model, tokenizer=tokenizer, splits=splits, progress=False, log=lambda m: None)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["best_epoch"] == int(np.argmax([e["valid_f1"] for e in metrics["epochs"]])) + 1
    for name in ("metrics.json", "curves.png", "train.log", "best/model.safetensors", "best/tagger.json", "best/tokenizer.json", "best/labels.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert metrics["test"]["unseen"]["sentences"] == 0  # every test sentence occurs in train


def test_training_with_rewrites_and_shape_markers_records_valid_unseen_per_epoch(tmp_path, tokenizer):
    import dataclasses
    import json

    from ner_batch.data.conll import Sentence
    from ner_batch.models import build_model
    from ner_batch.models.config import TaggerConfig

    sents = tiny_sentences()
    other = Sentence("Sofacy used Zebrocy against Europe .".split(), ["B-HackOrg", "O", "B-Tool", "O", "B-Area", "O"])
    splits = {"train": sents * 4, "valid": sents + [other], "test": [other]}
    model = build_model(dataclasses.replace(make_tiny_model("softmax").config, shape_markers=True), pretrained=False)
    settings = TrainSettings(head="softmax", epochs=2, lr=3e-3, head_lr=3e-3, batch_size=2, mention_replace=0.5,
                             name_mask=0.5, shape_markers=True)
    log: list[str] = []
    metrics = train(settings, tmp_path / "run", model=model, tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    assert all(0.0 <= e["valid_unseen_f1"] <= 1.0 for e in metrics["epochs"])
    assert metrics["valid"]["unseen"]["sentences"] == 1  # the one valid sentence not in train
    # Sofacy, Zebrocy and Europe are no mention in train ("Eastern Europe" is)
    assert metrics["test"]["new_names"]["new"]["mentions"] == 3 and metrics["test"]["new_names"]["known"]["mentions"] == 0
    assert all(0.0 <= e["valid_new_name_recall"] <= 1.0 for e in metrics["epochs"])
    assert "new-name recall" in "\n".join(log)
    assert "mention replace 0.5, name mask 0.5" in "\n".join(log)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]
    assert saved["mention_replace"] == 0.5 and saved["shape_markers"] is True
    assert TaggerConfig.load(tmp_path / "run" / "best").shape_markers is True


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_frozen_word_embeddings_stay_as_pretrained_but_the_shape_markers_rows_train(tmp_path, tokenizer, head):
    import dataclasses

    from ner_batch.models import build_model

    model = build_model(dataclasses.replace(make_tiny_model(head).config, shape_markers=True), pretrained=False)
    before = model.encoder.get_input_embeddings().weight.detach().clone()  # shape: (vocab, hidden)
    layer_before = {n: p.detach().clone() for n, p in model.named_parameters() if ".layer.1." in n}
    settings = TrainSettings(head=head, epochs=2, lr=3e-3, head_lr=3e-3, batch_size=2, shape_markers=True,
                             freeze_word_embeddings=True, warmup=0.0, weight_decay=0.5)  # decay would move every row
    log: list[str] = []
    splits = {"train": tiny_sentences() * 3, "valid": tiny_sentences(), "test": tiny_sentences()}
    train(settings, tmp_path / "run", model=model, tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    assert "word-piece embeddings frozen (shape markers' rows train)" in "\n".join(log)
    saved, _ = load_model(tmp_path / "run" / "best")
    after = saved.encoder.get_input_embeddings().weight.detach()
    markers = model.config.windower(tokenizer).marker_ids
    used = [i for i in markers if not torch.equal(after[i], before[i])]
    assert used, "no shape marker's row trained"  # the tiny sentences are Capitalized: marker 1 at least
    others = torch.ones(len(before), dtype=torch.bool)
    others[markers] = False
    assert torch.equal(after[others], before[others])  # every other row exactly as it was
    moved = [n for n, p in saved.named_parameters() if n in layer_before and not torch.equal(p.detach(), layer_before[n])]
    assert moved, "the layers above the embeddings did not train"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]["freeze_word_embeddings"] is True


def test_frozen_word_embeddings_without_markers_leave_the_optimizer_and_decay_stays_off_frozen_rows():
    model = make_tiny_model("crf")
    weight = freeze_word_embeddings(model)
    assert weight.requires_grad is False
    opt, _ = build_optimizer(model, TrainSettings(head="crf", warmup=0.0), 10)
    assert all(p is not weight for g in opt.param_groups for p in g["params"])
    marked = make_tiny_model("crf")
    weight = freeze_word_embeddings(marked, [1, 2])
    opt, _ = build_optimizer(marked, TrainSettings(head="crf", warmup=0.0, freeze_word_embeddings=True), 10)
    (group,) = [g for g in opt.param_groups if any(p is weight for p in g["params"])]
    assert group["weight_decay"] == 0.0
    weight.sum().backward()
    assert weight.grad[[1, 2]].eq(1).all() and weight.grad[3:].eq(0).all() and weight.grad[0].eq(0).all()


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_weight_decay_reaches_every_weight_matrix_and_no_bias_or_norm(decay):
    model = make_tiny_model("crf")
    opt, _ = build_optimizer(model, TrainSettings(head="crf", weight_decay=decay, warmup=0.0), 10)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(decay_of) == len(names)
    for name, p in names.items():
        plain = "bias" in name or "LayerNorm" in name  # LSTM biases: bias_ih_l0, bias_hh_l0
        assert decay_of[id(p)] == (0.0 if plain else decay), name
    assert any(decay_of[id(p)] == decay for n, p in names.items() if n.startswith("encoder."))
    assert any(decay_of[id(p)] == decay for n, p in names.items() if not n.startswith("encoder."))


def test_start_decay_pulls_encoder_matrices_toward_their_start_and_the_head_toward_zero():
    """With zero gradients AdamW's step is decay alone: anchored weights keep (1 - lr*L) of their
    distance to the start, the head's weight matrices (1 - lr*W) of themselves, biases and norms all."""
    from ner_batch.training.anchor import StartAnchor

    model = make_tiny_model("crf")
    lr, start_decay, weight_decay = 1e-2, 5.0, 0.1
    settings = TrainSettings(head="crf", lr=lr, head_lr=lr, start_decay=start_decay, weight_decay=weight_decay, warmup=0.0)
    opt, _ = build_optimizer(model, settings, 10)
    anchor = StartAnchor(opt)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    delta = {n: torch.randn_like(p) for n, p in model.named_parameters()}  # the drift fine-tuning made
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.add_(delta[n])
            p.grad = torch.zeros_like(p)
    opt.step()
    anchor.pull()
    kinds = set()
    for n, p in model.named_parameters():
        plain = "bias" in n or "LayerNorm" in n
        if plain:
            expected, kind = start[n] + delta[n], "plain"
        elif n.startswith("encoder."):
            expected, kind = start[n] + delta[n] * (1 - lr * start_decay), "anchored"
        else:
            expected, kind = (start[n] + delta[n]) * (1 - lr * weight_decay), "toward zero"
        kinds.add(kind)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    assert kinds == {"plain", "anchored", "toward zero"}
    off, _ = build_optimizer(model, TrainSettings(head="crf", warmup=0.0), 10)
    with pytest.raises(ValueError, match="expected at least one weight matrix to anchor to its start, got none"):
        StartAnchor(off)


def test_train_with_start_decay_says_so_and_records_it(tmp_path, tokenizer):
    settings = TrainSettings(head="softmax", epochs=1, batch_size=2, start_decay=5.0, warmup=0.0)
    log: list[str] = []
    splits = {"train": tiny_sentences() * 2, "valid": tiny_sentences(), "test": tiny_sentences()}
    train(settings, tmp_path / "run", model=make_tiny_model("softmax"), tokenizer=tokenizer, splits=splits, progress=False,
          log=log.append)
    assert "encoder weight matrices decaying toward their start (rate 5.0)" in "\n".join(log)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]["start_decay"] == 5.0


def test_encoder_depths_count_layers_down_from_the_top():
    names = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
             "encoder.layer.1.output.dense.bias", "encoder.layer.2.output.LayerNorm.weight", "pooler.dense.weight"]
    assert encoder_depths(names) == {names[0]: 3, names[1]: 2, names[2]: 1, names[3]: 0, names[4]: 0}
    distil = ["embeddings.position_embeddings.weight", "transformer.layer.0.ffn.lin1.weight",
              "transformer.layer.5.ffn.lin1.weight"]
    assert encoder_depths(distil) == {distil[0]: 6, distil[1]: 5, distil[2]: 0}
    with pytest.raises(BackboneSettingError, match="expected encoder parameters named like 'encoder.layer.N.' for --layer-decay, "
                                         "found none among 2"):
        encoder_depths(["blocks.0.w", "blocks.1.w"])


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_layer_decay_gives_each_encoder_layer_its_learning_rate(head):
    model = make_tiny_model(head)  # 2 layers, 32 wide
    settings = TrainSettings(head=head, lr=1e-3, head_lr=5e-3, layer_decay=0.5, warmup=0.0)
    opt, _ = build_optimizer(model, settings, 10)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    expected = {"encoder.embeddings.": 2.5e-4, "encoder.encoder.layer.0.": 5e-4, "encoder.encoder.layer.1.": 1e-3}
    seen = set()
    for name, p in model.named_parameters():
        prefix = next((k for k in expected if name.startswith(k)), None)
        if prefix:
            seen.add(prefix)
            assert lr_of[id(p)] == pytest.approx(expected[prefix]), name
        elif not name.startswith("encoder."):
            assert lr_of[id(p)] == pytest.approx(5e-3), name
    assert seen == set(expected)
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)
    plain, _ = build_optimizer(model, TrainSettings(head=head, lr=1e-3, head_lr=5e-3, warmup=0.0), 10)
    assert sorted({g["lr"] for g in plain.param_groups}) == [1e-3, 5e-3]


@pytest.mark.parametrize("flag, value, expected", [
    *[("--layer-decay", v, "expected --layer-decay above 0 and at most 1 (e.g. 0.8; 1: one encoder learning rate), got {}")
      for v in ("0", "1.5", "-0.2")],
    *[("--encoder-dropout", v, "expected --encoder-dropout from 0 up to (not including) 1, e.g. 0.2, got {}")
      for v in ("1", "1.5", "-0.1")],
    *[("--weight-decay", v, "expected --weight-decay of 0 (none) or above (e.g. 0.01), got {}")
      for v in ("-0.01", "nan", "inf")],
    *[("--start-decay", v, "expected --start-decay of 0 (off) or above (e.g. 5), got {}")
      for v in ("-1", "nan", "inf")],
])
def test_train_refuses_an_optimizer_or_encoder_setting_out_of_range_in_one_line(tmp_path, flag, value, expected):
    from click.testing import CliRunner

    from ner_batch.cli import main

    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), flag, value])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert expected.format(float(value)) in " ".join(res.output.split())
    assert not (tmp_path / "run").exists()


def test_train_refuses_layer_decay_on_an_encoder_without_layer_names_in_one_line(tmp_path, tokenizer):
    """ALBERT names its layers albert_layer_groups.G.albert_layers.L: no 'layer.N.', so a decay would do nothing."""
    from click.testing import CliRunner
    from transformers import AlbertConfig, AlbertModel

    from conftest import write_tiny_data
    from ner_batch.cli import main

    ckpt = tmp_path / "tiny-albert"
    AlbertModel(AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    data = write_tiny_data(tmp_path / "data")
    res = CliRunner().invoke(main, ["train", "--head", "crf", "--backbone", str(ckpt), "--data", str(data),
                                    "--out", str(tmp_path / "run"), "--epochs", "1", "--layer-decay", "0.8"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    err = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and "expected encoder parameters named like 'encoder.layer.N.' for --layer-decay, found none" in err[0]
    assert "use --layer-decay 1" in err[0]
    assert not (tmp_path / "run").exists()  # refused before the run directory (and its train.log) is made


def _encoder_dropouts(encoder) -> set[float]:
    """Every dropout rate inside an encoder: its nn.Dropout modules and SDPA attention's float."""
    rates = {m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)}
    return rates | {m.dropout_prob for m in encoder.modules() if isinstance(getattr(m, "dropout_prob", None), float)}


def test_encoder_dropout_sets_every_dropout_of_bert_and_distilbert_encoders():
    from transformers import DistilBertConfig, DistilBertModel, T5Config, T5EncoderModel

    from ner_batch.models.backbone import set_encoder_dropout

    bert = make_tiny_model("crf").encoder  # hidden and attention dropout 0.0
    assert _encoder_dropouts(bert) == {0.0}
    assert set_encoder_dropout(bert, 0.3) > 2 * 2  # embeddings + per layer: attention output, FFN output (+ eager attention)
    assert _encoder_dropouts(bert) == {0.3}
    assert bert.config.hidden_dropout_prob == 0.3 and bert.config.attention_probs_dropout_prob == 0.3
    distil = DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    set_encoder_dropout(distil, 0.25)
    assert _encoder_dropouts(distil) == {0.25}
    assert distil.config.dropout == 0.25 and distil.config.attention_dropout == 0.25
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    bert.train()
    assert not torch.equal(bert(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state)  # it samples
    bert.eval()
    assert torch.equal(bert(input_ids=ids).last_hidden_state, bert(input_ids=ids).last_hidden_state)  # tagging: none
    t5 = T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match=r"expected the encoder's config to hold its dropout rates \(hidden_dropout_prob / "
                                         r"attention_probs_dropout_prob / dropout / attention_dropout\), found none in model "
                                         r"type 't5'; train without --encoder-dropout"):
        set_encoder_dropout(t5, 0.2)


def test_training_with_encoder_dropout_records_it_and_the_backbone_default_is_left_alone(tmp_path, tokenizer):
    splits = {"train": tiny_sentences() * 2, "valid": tiny_sentences(), "test": tiny_sentences()}
    log: list[str] = []
    settings = TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0, encoder_dropout=0.3)
    train(settings, tmp_path / "run", model=make_tiny_model("crf"), tokenizer=tokenizer, splits=splits, progress=False,
          log=log.append)
    assert ", encoder dropout 0.3" in "\n".join(log)
    saved = json.loads((tmp_path / "run" / "best" / "tagger.json").read_text())["encoder_config"]
    assert saved["hidden_dropout_prob"] == 0.3 and saved["attention_probs_dropout_prob"] == 0.3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["settings"]["encoder_dropout"] == 0.3
    train(TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0), tmp_path / "plain", model=make_tiny_model("crf"),
          tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    plain = json.loads((tmp_path / "plain" / "best" / "tagger.json").read_text())["encoder_config"]
    assert plain["hidden_dropout_prob"] == 0.0  # the encoder's own rate, untouched without the setting


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _tiny_encoder_of_halves():
    """The tiny crf model's encoder (2 layers, 32 wide, initializer_range 0.02), every weight 0.5: nothing the initialiser draws."""
    encoder = make_tiny_model("crf").encoder
    with torch.no_grad():
        for p in encoder.parameters():
            p.fill_(0.5)
    return encoder


def test_reinit_top_redraws_the_top_layers_alone_as_the_backbone_initialises_them():
    from transformers import DistilBertConfig, DistilBertModel

    from ner_batch.models.backbone import reinit_top_layers

    bert = _tiny_encoder_of_halves()
    before = _snapshot(bert)
    torch.manual_seed(7)
    assert reinit_top_layers(bert, 1) == 2
    after = _snapshot(bert)
    moved = {n for n in after if not torch.equal(after[n], before[n])}
    assert moved and all(n.startswith("encoder.layer.1.") for n in moved)
    assert {n for n in after if n.startswith("encoder.layer.1.")} == moved  # every top-layer tensor redrawn
    query = after["encoder.layer.1.attention.self.query.weight"]  # shape: (32, 32)
    assert 0.015 < query.std().item() < 0.025 and abs(query.mean().item()) < 0.005
    assert torch.equal(after["encoder.layer.1.attention.self.query.bias"], torch.zeros(32))
    assert torch.equal(after["encoder.layer.1.output.LayerNorm.weight"], torch.ones(32))
    again = _tiny_encoder_of_halves()
    torch.manual_seed(7)
    reinit_top_layers(again, 1)
    assert all(torch.equal(p, after[n]) for n, p in again.named_parameters())  # the seed fixes the draws
    assert reinit_top_layers(bert, 0) == 2 and all(torch.equal(p, after[n]) for n, p in bert.named_parameters())
    reinit_top_layers(bert, 2)
    assert not torch.equal(bert.encoder.layer[0].attention.self.query.weight, before["encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(bert.embeddings.word_embeddings.weight, before["embeddings.word_embeddings.weight"])

    distil = DistilBertModel(DistilBertConfig(vocab_size=100, dim=32, n_layers=3, n_heads=2, hidden_dim=64))
    start = _snapshot(distil)
    reinit_top_layers(distil, 2)
    moved = {n.split(".")[2] for n, p in distil.named_parameters() if not torch.equal(p, start[n])}
    assert moved == {"1", "2"}  # transformer.layer.1 and .2
    with pytest.raises(ValueError, match=r"expected --reinit-top from 0 to 3 \(the encoder's transformer layers\), got 4"):
        reinit_top_layers(distil, 4)


def test_reinit_top_refuses_an_encoder_without_a_layer_list():
    from transformers import T5Config, T5EncoderModel

    from ner_batch.models.backbone import reinit_top_layers

    t5 = T5EncoderModel(T5Config(vocab_size=100, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match=r"expected one list of transformer layers \('encoder.layer' or 'transformer.layer'\) "
                                         r"in the encoder, found 0 in model type 't5'"):
        reinit_top_layers(t5, 1)


def test_reinit_top_is_drawn_from_seed_so_runs_of_other_data_seeds_start_alike(tmp_path, tokenizer):
    """At learning rate 0 a run saves the weights it started from: the redrawn top layer is the
    same for two data seeds (so they can be souped) and differs from the pre-trained one."""
    from safetensors.torch import load_file

    splits = {"train": tiny_sentences() * 2, "valid": tiny_sentences(), "test": tiny_sentences()}
    log: list[str] = []
    saved = {}
    for name, reinit, data_seed in (("a", 1, 1), ("b", 1, 2), ("plain", 0, 1)):
        settings = TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0, lr=0.0, head_lr=0.0, seed=5,
                                 data_seed=data_seed, reinit_top=reinit)
        train(settings, tmp_path / name, model=make_tiny_model("crf"), tokenizer=tokenizer, splits=splits,
              progress=False, log=log.append)
        saved[name] = load_file(str(tmp_path / name / "best" / "model.safetensors"))
    assert "the encoder's top 1 layers re-initialised" in "\n".join(log) and "no LSTM" not in "\n".join(log)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["settings"]["reinit_top"] == 1
    top, low = "encoder.encoder.layer.1.attention.self.query.weight", "encoder.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(saved["a"][top], saved["b"][top]) and not torch.equal(saved["a"][top], saved["plain"][top])
    assert torch.equal(saved["a"][low], saved["plain"][low])


def test_train_refuses_a_bad_reinit_top_or_lstm_width_in_one_line(tmp_path, tokenizer):
    from click.testing import CliRunner

    from conftest import write_tiny_data
    from ner_batch.cli import main

    def run(*args):
        res = CliRunner().invoke(main, ["train", "--head", "crf", "--out", str(tmp_path / "run"), *args])
        assert "Traceback" not in res.output, res.output
        assert not (tmp_path / "run").exists()
        return res.exit_code, " ".join(res.output.split())

    code, out = run("--data", str(tmp_path), "--reinit-top", "-1")
    assert code == 2 and "expected --reinit-top of 0 (keep every pre-trained layer) or above (e.g. 1), got -1" in out
    code, out = run("--data", str(tmp_path), "--lstm-hidden", "-1")
    assert code == 2 and "expected --lstm-hidden of 0 (no LSTM: the crf's emissions read the encoder) or above (e.g. 256), got -1" in out
    code, out = run("--data", str(tmp_path), "--reinit-top", "1", "--init", str(tmp_path))
    assert code == 2 and "expected --reinit-top or --init, not both: --init's model has already trained its top layers" in out
    ckpt = tmp_path / "tiny-bert"
    make_tiny_model("crf").encoder.save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    data = write_tiny_data(tmp_path / "data")
    code, out = run("--backbone", str(ckpt), "--data", str(data), "--epochs", "1", "--reinit-top", "3")
    assert code == 1 and "Error: expected --reinit-top from 0 to 2 (the encoder's transformer layers), got 3" in out


def test_a_crf_without_lstm_trains_and_says_so(tmp_path, tokenizer):
    splits = {"train": tiny_sentences() * 2, "valid": tiny_sentences(), "test": tiny_sentences()}
    log: list[str] = []
    train(TrainSettings(head="crf", epochs=1, batch_size=2, warmup=0.0, lstm_hidden=0), tmp_path / "run",
          model=make_tiny_model("crf", lstm_hidden=0), tokenizer=tokenizer, splits=splits, progress=False, log=log.append)
    assert ", no LSTM (emissions read the encoder)" in "\n".join(log)
    assert json.loads((tmp_path / "run" / "best" / "tagger.json").read_text())["lstm_hidden"] == 0
    loaded, _ = load_model(tmp_path / "run" / "best")
    assert loaded.head.forward_lstm is None and loaded.head.backward_lstm is None
