"""ner-batch pretrain: chunking, whole-word masking, the masked-LM loss, the command and its refusals."""

from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner

from conftest import save_tiny_backbone, tiny_encoder_config, write_tiny_data
from ner_batch.cli import main
from ner_batch.training.pretrain import IGNORE, Chunk, PretrainSettings, chunk_sentences, collate, mask_words, mlm_loss

LONG = "Lazarus Group deployed the WannaCry ransomware through EternalBlue against banks in South Korea".split()


def test_chunks_keep_every_piece_and_cut_only_between_words(tokenizer):
    def pieces(words):
        return tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]

    sentences = [LONG * 3, ["APT28"], [], ["  "], ["zqxjv" * 16]]
    chunks = chunk_sentences(tokenizer, sentences, max_length=16)
    assert all(0 < len(c.ids) <= 14 for c in chunks)  # room for [CLS] and [SEP]
    # nothing dropped, nothing doubled, in order; blank sentences give nothing
    assert [p for c in chunks for p in c.ids] == pieces(LONG * 3) + pieces(["APT28"]) + pieces(["zqxjv" * 16])
    first = chunk_sentences(tokenizer, [LONG * 3], max_length=16)
    assert len(first) > 2 and all(not set(a.words) & set(b.words) for a, b in zip(first, first[1:]))  # whole words
    huge = chunk_sentences(tokenizer, [["zqxjv" * 16]], max_length=16)
    assert len(huge) > 1 and all(set(c.words) == {0} for c in huge)  # one word longer than a chunk is cut inside


def test_mask_words_masks_whole_words_and_labels_only_them(tokenizer):
    chunk = chunk_sentences(tokenizer, [LONG], 64)[0]
    rng = random.Random(0)
    shown = {"mask": 0, "random": 0, "kept": 0}
    for _ in range(400):
        inputs, labels = mask_words(chunk, rng, 0.15, tokenizer.mask_token_id, len(tokenizer), frozenset(tokenizer.all_special_ids))
        chosen = {w for w, lab in zip(chunk.words, labels) if lab != IGNORE}
        assert len(chosen) == max(1, round(0.15 * len(set(chunk.words))))
        for i, w in enumerate(chunk.words):
            if w in chosen:
                assert labels[i] == chunk.ids[i]
            else:
                assert labels[i] == IGNORE and inputs[i] == chunk.ids[i]
        for w in chosen:  # one decision per word, for all its pieces
            pieces = [i for i, x in enumerate(chunk.words) if x == w]
            kinds = {"mask" if inputs[i] == tokenizer.mask_token_id else "kept" if inputs[i] == chunk.ids[i] else "random"
                     for i in pieces}
            assert len(kinds) == 1 or kinds <= {"random", "kept"}  # a random piece may draw the piece itself
            shown[min(kinds, key=["mask", "random", "kept"].index)] += 1
            assert not any(inputs[i] in tokenizer.all_special_ids and inputs[i] != tokenizer.mask_token_id for i in pieces)
    total = sum(shown.values())
    assert 0.75 < shown["mask"] / total < 0.85 and 0.05 < shown["random"] / total < 0.15


def test_at_least_one_word_is_masked_in_a_one_word_chunk():
    inputs, labels = mask_words(Chunk([2054, 2003], [0, 0]), random.Random(1), 0.15, 103, 30522)
    assert labels == [2054, 2003]


def test_the_fast_loss_equals_the_model_own_loss(tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**tiny_encoder_config())).eval()
    chunks = chunk_sentences(tokenizer, [LONG, LONG[:4]], 64)
    rng = random.Random(3)
    batch = collate([mask_words(c, rng, 0.3, tokenizer.mask_token_id, len(tokenizer)) for c in chunks],
                    tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(chunks[0].ids) + 2)
    assert batch["attention_mask"][1].sum() == len(chunks[1].ids) + 2 and (batch["labels"][:, 0] == IGNORE).all()
    with torch.no_grad():
        assert torch.allclose(mlm_loss(model, batch), model(**batch).loss, atol=1e-5)


@pytest.fixture
def tiny_backbone(tmp_path, tokenizer):
    return save_tiny_backbone(tmp_path / "tiny-bert", tokenizer)


def test_pretrain_writes_a_backbone_that_train_and_the_loader_take(tmp_path, tiny_backbone):
    from ner_batch.models.backbone import load_encoder

    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "tapt"
    res = CliRunner().invoke(main, ["pretrain", "--data", str(data), "--backbone", str(tiny_backbone), "--out", str(out),
                                    "--epochs", "6", "--lr", "3e-3", "--batch-size", "2", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "[train] " in res.output and "[valid] " in res.output  # the reader's repair reports
    meta = json.loads((out / "pretrain.json").read_text())
    losses = [e["held_out_loss"] for e in meta["history"]]
    assert len(losses) == 7 and losses[-1] < losses[0]  # valid here repeats train's sentences: it must learn them
    assert meta["chunks"] == 2 and meta["settings"]["mask_share"] == 0.15
    start, tuned = load_encoder(str(tiny_backbone)), load_encoder(str(out))
    assert start.config.hidden_size == tuned.config.hidden_size == 32
    assert not torch.equal(start.embeddings.word_embeddings.weight, tuned.embeddings.word_embeddings.weight)
    res = CliRunner().invoke(main, ["train", "--head", "crf", "--backbone", str(out), "--data", str(data), "--out",
                                    str(tmp_path / "run"), "--epochs", "1", "--lstm-hidden", "8", "--threads", "1"])
    assert res.exit_code == 0, res.output
    # a second pretrain into the same place is refused in one line
    res = CliRunner().invoke(main, ["pretrain", "--data", str(data), "--backbone", str(tiny_backbone), "--out", str(out)])
    assert res.exit_code == 1 and f"expected an empty --out, found a model in {out}" in res.output
    assert "Traceback" not in res.output


def test_pretrain_reads_a_corpus_and_skips_what_it_cannot_read(tmp_path, tiny_backbone):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("APT28 used X-Agent against targets in Eastern Europe. The Lazarus Group deployed Poison Ivy.\n")
    (corpus / "b.jsonl").write_text('{"id": "r1", "text": "Sofacy used Zebrocy."}\nnot json\n')
    res = CliRunner().invoke(main, ["pretrain", str(corpus), "--backbone", str(tiny_backbone), "--out", str(tmp_path / "o"),
                                    "--epochs", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "Traceback" not in res.output
    meta = json.loads((tmp_path / "o" / "pretrain.json").read_text())
    assert meta["chunks"] == 2 and meta["held_out_chunks"] == 1  # three sentences: the first held out
    one = tmp_path / "one.txt"
    one.write_text("Sofacy used Zebrocy.")
    res = CliRunner().invoke(main, ["pretrain", str(one), "--backbone", str(tiny_backbone), "--out", str(tmp_path / "o1"),
                                    "--epochs", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "o1" / "pretrain.json").read_text())
    assert meta["chunks"] == 1 and meta["held_out_chunks"] == 0 and meta["history"][-1]["held_out_loss"] is None


@pytest.mark.parametrize("args, message", [
    (["--mask-share", "0"], "expected --mask-share above 0 and below 1, e.g. 0.15, got 0.0"),
    (["--epochs", "0"], "expected --epochs of at least 1, got 0"),
    (["--max-length", "4"], "expected --max-length of at least 8 word pieces, got 4"),
    (["--lr", "nan"], "expected a positive --lr, e.g. 1e-4, got nan"),
])
def test_pretrain_refuses_bad_settings_in_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["pretrain", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_pretrain_refuses_missing_or_empty_text_in_one_line(tmp_path, tiny_backbone):
    res = CliRunner().invoke(main, ["pretrain", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "to exist, found nothing at that path" in res.output
    empty = tmp_path / "blank.txt"
    empty.write_text("   \n\n")
    res = CliRunner().invoke(main, ["pretrain", str(empty), "--backbone", str(tiny_backbone), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "expected text to pre-train on, found no words in 1 input(s)" in res.output
    res = CliRunner().invoke(main, ["pretrain", "--data", str(tmp_path / "no-dnrti"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output and str(tmp_path / "no-dnrti") in res.output
    assert PretrainSettings().epochs == 10
