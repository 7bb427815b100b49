"""Any Hugging Face checkpoint works the same way: a local path, and a DistilBERT encoder."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from conftest import CHECK_SENTENCES, LABELS, tiny_encoder_config, write_tiny_data
from ner_batch.cli import main


def test_train_and_evaluate_from_a_local_checkpoint_path(tmp_path, tokenizer):
    from transformers import AutoConfig, AutoModel

    ckpt = tmp_path / "tiny-bert"
    cfg = dict(tiny_encoder_config())
    AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    data = write_tiny_data(tmp_path / "data")
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--head", "crf", "--backbone", str(ckpt), "--data", str(data), "--out", str(tmp_path / "run"),
                               "--epochs", "2", "--lr", "3e-3", "--head-lr", "3e-3", "--batch-size", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    log = (tmp_path / "run" / "train.log").read_text().splitlines()  # the reader's reports, said before the directory existed
    assert [line.split()[0] for line in log[:3]] == ["[train]", "[valid]", "[test]"] and log[-1].startswith("best epoch")
    res = runner.invoke(main, ["evaluate", "--run", str(tmp_path / "run"), "--data", str(data), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output.strip().splitlines()[-1])
    assert result["split"] == "test" and result["unseen"]["sentences"] == 0
    assert set(result["per_type"]) <= {"Area", "HackOrg", "Tool"}
    cfg_saved = json.loads((tmp_path / "run" / "best" / "tagger.json").read_text())
    assert cfg_saved["backbone"] == str(ckpt)


def test_distilbert_encoder_exports_with_parity(tmp_path, tokenizer, windower):
    from transformers import DistilBertConfig

    from ner_batch.export.build import build_bundle
    from ner_batch.models import TaggerConfig, build_model
    from ner_batch.runtime.tagger import Tagger

    encoder_config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, dropout=0.0, attention_dropout=0.0).to_dict()
    torch.manual_seed(0)
    model = build_model(TaggerConfig(head="softmax", labels=LABELS, backbone="tiny-distilbert", max_length=64, encoder_config=encoder_config),
                        pretrained=False).eval()
    manifest = build_bundle(tmp_path / "run", tmp_path / "bundle", model=model, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, variants=("fp32", "opt"), log=lambda m: None)
    assert manifest["encoder_type"] == "distilbert"
    assert manifest["export_check"]["opt"]["max_abs_diff"] < 1e-3
    tagger = Tagger(tmp_path / "bundle", "opt", device="cpu")
    batch = tagger.windower.collate(tagger.windower.windows(CHECK_SENTENCES[:3]))
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in batch.inputs().items()}).numpy()
    mask = batch.word_mask.astype(bool)
    np.testing.assert_allclose(tagger.emit(batch)[mask], ref[mask], atol=1e-4)


def test_frozen_word_embeddings_of_a_distilbert_checkpoint_stay_as_saved(tmp_path, tokenizer):
    """--freeze-word-embeddings finds the word-piece matrix through the HF model, whatever its own name for it."""
    from transformers import DistilBertConfig, DistilBertModel

    from ner_batch.models.tagger import load_model

    ckpt = tmp_path / "tiny-distilbert"
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64)).save_pretrained(ckpt)
    tokenizer.save_pretrained(ckpt)
    saved = DistilBertModel.from_pretrained(ckpt).embeddings
    data = write_tiny_data(tmp_path / "data")
    res = CliRunner().invoke(main, ["train", "--head", "softmax", "--backbone", str(ckpt), "--data", str(data), "--out",
                                    str(tmp_path / "run"), "--epochs", "2", "--lr", "3e-3", "--batch-size", "2",
                                    "--freeze-word-embeddings"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "word-piece embeddings frozen" in (tmp_path / "run" / "train.log").read_text()
    model, _ = load_model(tmp_path / "run" / "best")
    assert torch.equal(model.encoder.get_input_embeddings().weight.detach(), saved.word_embeddings.weight.detach())
    assert not torch.equal(model.encoder.embeddings.position_embeddings.weight.detach(),
                           saved.position_embeddings.weight.detach())
