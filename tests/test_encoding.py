"""Words to windows: no word is lost, first-piece positions are right."""

from __future__ import annotations

import numpy as np
import pytest

from ner_batch.encoding import WordEncoder


def test_special_tokens_and_first_pieces(word_encoder):
    [w] = word_encoder.windows([["APT28", "used", "X-Agent"]])
    assert w.input_ids[0] == word_encoder.prefix[0]
    assert w.input_ids[-1] == word_encoder.suffix[-1]
    pieces = word_encoder.word_pieces([["APT28", "used", "X-Agent"]])[0]
    assert [w.input_ids[i] for i in w.word_index] == [p[0] for p in pieces]
    assert w.n_tokens == 2 + sum(len(p) for p in pieces)


def test_long_sentence_gets_overlapping_windows_whose_owned_words_partition_it(tokenizer):
    enc = WordEncoder(tokenizer.backend_tokenizer, max_length=24, overlap=8)
    words = [f"malware{i}" for i in range(60)]  # several pieces each
    windows = enc.windows([words])
    assert len(windows) > 2
    assert all(w.n_tokens <= 24 for w in windows)
    owned = [i for w in windows for i in range(w.own_start, w.own_end)]
    assert owned == list(range(60))  # every word exactly once, in order
    for a, b in zip(windows, windows[1:]):
        assert b.word_start < a.word_end  # consecutive windows share words
        assert a.word_start <= a.own_start <= a.own_end <= a.word_end
    pieces = [len(p) for p in enc.word_pieces([words])[0]]
    for w in windows:  # an owned word has context on both sides, except at the sentence's ends
        for j in range(w.own_start, w.own_end):
            left = sum(pieces[w.word_start : j])
            right = sum(pieces[j + 1 : w.word_end])
            assert (left >= 3 or w.word_start == 0) and (right >= 3 or w.word_end == 60), (j, left, right)


def test_overlap_is_checked(tokenizer):
    with pytest.raises(ValueError, match="expected an overlap of 0..11 word pieces"):
        WordEncoder(tokenizer.backend_tokenizer, max_length=24, overlap=12)


def test_without_overlap_windows_tile_the_sentence(tokenizer):
    enc = WordEncoder(tokenizer.backend_tokenizer, max_length=16, overlap=0)
    windows = enc.windows([[f"malware{i}" for i in range(40)]])
    assert [i for w in windows for i in range(w.word_start, w.word_end)] == list(range(40))


def test_word_longer_than_a_window_keeps_its_first_pieces(tokenizer):
    enc = WordEncoder(tokenizer.backend_tokenizer, max_length=12)
    words = ["a", "ab-" * 334, "b"]  # a 1,002-character word of ~668 pieces
    assert len(enc.word_pieces([words])[0][1]) > 12
    windows = enc.windows([words])
    assert [(w.word_start, w.word_end) for w in windows] == [(0, 1), (1, 2), (2, 3)]
    assert windows[1].n_tokens == 12


def test_word_without_pieces_gets_unk(word_encoder):
    # U+200B is removed by BERT normalization: the word would vanish without the UNK rule.
    [w] = word_encoder.windows([["a", "\u200b", "b"]])
    assert len(w.word_index) == 3
    assert w.input_ids[w.word_index[1]] == word_encoder.unk_id


def test_collate_pads_right(word_encoder):
    windows = word_encoder.windows([["a", "b", "c"], ["d"]])
    batch = word_encoder.collate(windows)
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.word_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.input_ids.dtype == np.int64
    assert abs(batch.padding_ratio - 0.2) < 1e-9
