"""Shape markers: a word's case and digits given to an uncased backbone as one extra piece."""

from __future__ import annotations

import re

import pytest

from conftest import CHECK_SENTENCES, make_tiny_model

from ner_batch.encoding import SHAPE_MARKERS, Windower, word_shape


@pytest.mark.parametrize("word,shape", [
    ("apt", 0), ("2017", 0), (",", 0), ("spear-phishing", 0), ("", 0),
    ("Lazarus", 1), ("A", 1), ("Hong", 1),
    ("NATO", 2), ("U.S.", 2),
    ("PowerShell", 3), ("iOS", 3), ("FireEye", 3),
    ("APT28", 4), ("x64", 4), ("CVE-2017-0199", 4),
])
def test_word_shape(word, shape):
    assert word_shape(word) == shape


def test_markers_follow_the_pieces_of_marked_words_only(tokenizer):
    plain = Windower(tokenizer.backend_tokenizer, 64)
    marked = Windower(tokenizer.backend_tokenizer, 64, shape_markers=True)
    words = ["APT28", "used", "PowerShell", "in", "NATO", "Lazarus", "."]
    [p], [m] = plain.word_pieces([words]), marked.word_pieces([words])
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SHAPE_MARKERS]
    for word, a, b in zip(words, p, m):
        shape = word_shape(word)
        assert b == (a + [ids[shape - 1]] if shape else a)
    # the first piece (the one the label is read from) is the word's own
    [w] = marked.windows([words])
    assert [w.input_ids[i] for i in w.word_index] == [pieces[0] for pieces in p]


def test_a_vocabulary_without_unused_tokens_is_refused_with_a_way_out(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, "a": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    msg = "shape markers: expected [unused1], [unused2], [unused3], [unused4] in the tokenizer's vocabulary"
    with pytest.raises(ValueError, match=re.escape(msg)):
        Windower(tok, 16, shape_markers=True)


def test_a_bundle_with_shape_markers_tags_as_its_pytorch_model(tmp_path, tokenizer):
    import dataclasses

    import numpy as np
    import torch

    from ner_batch.export.build import build_bundle
    from ner_batch.models import build_model
    from ner_batch.runtime.tagger import Tagger
    from ner_batch.training.trainer import predict_tokens, to_torch

    base = make_tiny_model("crf", seed=3)
    config = dataclasses.replace(base.config, shape_markers=True)
    model = build_model(config, pretrained=False).eval()
    model.load_state_dict(base.state_dict())
    manifest = build_bundle(tmp_path / "run", tmp_path / "bundle", model=model, tokenizer=tokenizer,
                            check_sentences=CHECK_SENTENCES, variants=("fp32",), log=lambda m: None)
    assert manifest["shape_markers"] is True
    tagger = Tagger(tmp_path / "bundle", "fp32", device="cpu")
    assert tagger.windower.shape_markers
    batch = tagger.windower.collate(tagger.windower.windows(CHECK_SENTENCES))
    with torch.no_grad():
        ref = model(**to_torch(batch)).numpy()
    mask = batch.word_mask.astype(bool)
    np.testing.assert_allclose(tagger.emit(batch)[mask], ref[mask], atol=1e-4, rtol=1e-4)
    expected = predict_tokens(model, config.windower(tokenizer), CHECK_SENTENCES)
    assert [t.labels for t in tagger.tag_words(CHECK_SENTENCES)] == expected
    # the markers are in what the model sees: more pieces than without them
    plain = base.config.windower(tokenizer)
    assert plain.collate(plain.windows(CHECK_SENTENCES)).attention_mask.sum() < batch.attention_mask.sum()
