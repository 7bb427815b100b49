"""Words to windows: no word is lost, first-piece positions are right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ner_batch.encoding import Windower


def test_special_tokens_and_first_pieces(windower):
    [w] = windower.windows([["APT28", "used", "X-Agent"]])
    assert w.input_ids[0] == windower.prefix[0]
    assert w.input_ids[-1] == windower.suffix[-1]
    pieces = windower.word_pieces([["APT28", "used", "X-Agent"]])[0]
    assert [w.input_ids[i] for i in w.word_index] == [p[0] for p in pieces]
    assert w.n_tokens == 2 + sum(len(p) for p in pieces)


def test_long_sentence_gets_overlapping_windows_whose_owned_words_partition_it(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=24, overlap=8)
    words = [f"malware{i}" for i in range(60)]  # several pieces each
    windows = windower.windows([words])
    assert len(windows) > 2
    assert all(w.n_tokens <= 24 for w in windows)
    owned = [i for w in windows for i in range(w.own_start, w.own_end)]
    assert owned == list(range(60))  # every word exactly once, in order
    for a, b in zip(windows, windows[1:]):
        assert b.word_start < a.word_end  # consecutive windows share words
        assert a.word_start <= a.own_start <= a.own_end <= a.word_end
    pieces = [len(p) for p in windower.word_pieces([words])[0]]
    for w in windows:  # an owned word has context on both sides, except at the sentence's ends
        for j in range(w.own_start, w.own_end):
            left = sum(pieces[w.word_start : j])
            right = sum(pieces[j + 1 : w.word_end])
            assert (left >= 3 or w.word_start == 0) and (right >= 3 or w.word_end == 60), (j, left, right)


def test_overlap_is_checked(tokenizer):
    with pytest.raises(ValueError, match="expected an overlap of 0..11 word pieces"):
        Windower(tokenizer.backend_tokenizer, max_length=24, overlap=12)


def test_without_overlap_windows_tile_the_sentence(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=16, overlap=0)
    windows = windower.windows([[f"malware{i}" for i in range(40)]])
    assert [i for w in windows for i in range(w.word_start, w.word_end)] == list(range(40))


def test_word_longer_than_a_window_keeps_its_first_pieces(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=12)
    words = ["a", "ab-" * 334, "b"]  # a 1,002-character word of ~668 pieces
    assert len(windower.word_pieces([words])[0][1]) > 12
    windows = windower.windows([words])
    assert [(w.word_start, w.word_end) for w in windows] == [(0, 1), (1, 2), (2, 3)]
    assert windows[1].n_tokens == 12


def test_word_without_pieces_gets_unk(windower):
    # U+200B is removed by BERT normalization: the word would vanish without the UNK rule.
    [w] = windower.windows([["a", "\u200b", "b"]])
    assert len(w.word_index) == 3
    assert w.input_ids[w.word_index[1]] == windower.unk_id


def test_collate_pads_right(windower):
    windows = windower.windows([["a", "b", "c"], ["d"]])
    batch = windower.collate(windows)
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch.word_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.input_ids.dtype == np.int64
    assert abs(batch.padding_ratio - 0.2) < 1e-9


def test_neighbours_add_whole_words_of_the_sentences_around_and_own_only_the_sentence(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=40, overlap=8)
    sentences = [["APT28", "used", "X-Agent", "."], [], ["The", "Lazarus", "group", "deployed", "it"], ["ok"],
                 [f"malware{i}" for i in range(30)], ["Turla", "again", "."]]
    pieces = windower.word_pieces(sentences)
    assert windower.windows(sentences, 0) == windower.windows(sentences)
    windows = windower.windows(sentences, 6)
    long = windower.windows([sentences[4]])
    assert len(long) > 1 and [w for w in windows if w.sentence == 4] == [
        dataclasses.replace(w, sentence=4) for w in long]  # too long for one window: split as before, no neighbours
    flat = [(si, j) for si, p in enumerate(pieces) for j in range(len(p))]  # every word of the text, in order
    for w in (w for w in windows if w.sentence != 4):
        si, n = w.sentence, len(sentences[w.sentence])
        assert (w.own_start, w.own_end) == (0, n) and w.word_start <= 0 and w.word_end >= n and w.n_tokens <= 40
        at = flat.index((si, 0))
        words = flat[at + w.word_start : at + w.word_end]  # the window's words: neighbours, the sentence, neighbours
        expected = windower.prefix + [t for s, j in words for t in pieces[s][j]] + windower.suffix
        assert w.input_ids == expected
        size = [len(pieces[s][j]) for s, j in words]
        before, after = sum(size[: -w.word_start]), sum(size[-w.word_start + n :])
        assert before <= 6 and after <= 6
        if at + w.word_start > 0:  # stopped short: the next word back would pass the limit
            assert before + len(pieces[flat[at + w.word_start - 1][0]][flat[at + w.word_start - 1][1]]) > 6
        if at + w.word_end < len(flat):  # and so would the next word on
            assert after + len(pieces[flat[at + w.word_end][0]][flat[at + w.word_end][1]]) > 6
    assert [w.sentence for w in windows if w.sentence != 4] == [0, 2, 3, 5]  # the empty sentence has no window
    assert windows[0].word_start == 0 and windows[-1].word_end == len(sentences[-1])  # the text's own ends
    huge = windower.windows(sentences, 10**9)  # each side gets at most half the room the sentence leaves
    assert all(w.n_tokens <= 40 for w in huge) and huge == windower.windows(sentences, windower.budget // 2)
    with pytest.raises(ValueError, match="expected neighbours >= 0 word pieces, got -1"):
        windower.windows(sentences, -1)
