"""The one tagging path: windows stitched per sentence, no seam at any window border."""

from __future__ import annotations

import numpy as np
import pytest

from ner_batch.batching import BatchSettings
from ner_batch.decode import Decoder
from ner_batch.encoding import Batch, Windower
from ner_batch.labels import bio_spans
from ner_batch.tagging import SentenceTagger

LABELS = ["O", "B-HackOrg", "I-HackOrg", "B-Tool", "I-Tool"]
ENTITY = ["Lazarus", "Group", "Alpha"]


def context_free_emitter(windower: Windower, scores: dict[str, int], mark_edges: bool = False):
    """A fake model: each word's emission depends on its first piece only; with ``mark_edges``
    the first and last word of every window get B-Tool, as a model short of context might."""
    by_piece = {windower.tokenizer.token_to_id(w.lower()): label for w, label in scores.items()}

    def emit(batch: Batch) -> np.ndarray:
        b, w = batch.word_index.shape
        out = np.zeros((b, w, len(LABELS)), dtype=np.float32)  # shape: (B, W, L)
        out[..., 0] = 5.0
        for i in range(b):
            n = int(batch.word_mask[i].sum())
            for j in range(n):
                label = by_piece.get(int(batch.input_ids[i, batch.word_index[i, j]]))
                if label is not None:
                    out[i, j, label] = 10.0
                if mark_edges and j in (0, n - 1):
                    out[i, j, 3] = 20.0
        return out

    return emit


@pytest.fixture(scope="module")
def small_windower(tokenizer):
    return Windower(tokenizer.backend_tokenizer, max_length=24, overlap=8)


@pytest.mark.parametrize("crf", [False, True])
def test_an_entity_planted_at_every_position_around_window_borders_comes_out_whole(small_windower, crf):
    emit = context_free_emitter(small_windower, {"lazarus": 1, "group": 2, "alpha": 2})
    crf_params = None
    if crf:
        n = len(LABELS)
        crf_params = {"transitions": np.zeros((n, n), np.float32), "start": np.zeros(n, np.float32), "end": np.zeros(n, np.float32)}
    tagger = SentenceTagger(small_windower, emit, Decoder(LABELS, crf_params), BatchSettings(max_batch=3))
    filler = [f"w{i}" for i in range(80)]
    borders = {w.word_end for w in small_windower.windows([filler + ENTITY])[:-1]}
    borders |= {w.word_start for w in small_windower.windows([filler + ENTITY])[1:]}
    positions = sorted({p for b in borders for p in range(b - 4, b + 2) if 0 <= p <= len(filler)})
    assert len(positions) > 10
    sentences = [filler[:p] + ENTITY + filler[p:] for p in positions]
    assert all(len(small_windower.windows([s])) >= 3 for s in sentences)
    for p, result in zip(positions, tagger.tag(sentences)):
        assert bio_spans(result.labels) == [(p, p + 3, "HackOrg")], p


def test_words_take_their_emissions_away_from_window_edges(small_windower):
    tagger = SentenceTagger(small_windower, context_free_emitter(small_windower, {}, mark_edges=True), Decoder(LABELS))
    sentence = [f"w{i}" for i in range(120)]
    assert len(small_windower.windows([sentence])) > 4
    [result] = tagger.tag([sentence])
    inner = result.labels[1:-1]  # the sentence's own first and last words have only one window
    assert inner == ["O"] * len(inner)


def test_batched_equals_one_by_one_and_sentence_order_is_kept(small_windower):
    emit = context_free_emitter(small_windower, {"lazarus": 1, "group": 2, "alpha": 2}, mark_edges=True)
    tagger = SentenceTagger(small_windower, emit, Decoder(LABELS), BatchSettings(token_budget=64, max_batch=2))
    rng = np.random.default_rng(0)
    sentences = [[f"w{j}" for j in range(int(n))] + ENTITY for n in rng.integers(0, 70, size=15)]
    together = tagger.tag(sentences)
    for s, r in zip(sentences, together):
        [alone] = tagger.tag([s])
        assert alone.labels == r.labels and len(r.labels) == len(s)


def test_empty_input_and_empty_sentence(small_windower):
    tagger = SentenceTagger(small_windower, context_free_emitter(small_windower, {}), Decoder(LABELS))
    assert tagger.tag([]) == []
    [empty, one] = tagger.tag([[], ["w"]])
    assert empty.labels == [] and one.labels == ["O"]


def test_neighbours_leave_a_context_free_model_unchanged_and_move_sentence_edges_off_window_edges(small_windower):
    sentences = [["Lazarus", "Group", "Alpha", "used", "it"], ["then", "Alpha"], [], ["w1", "Lazarus", "w2", "w3"]]
    plain = SentenceTagger(small_windower, context_free_emitter(small_windower, {"lazarus": 1, "alpha": 2}), Decoder(LABELS))
    assert [r.labels for r in plain.tag(sentences, neighbours=6)] == [r.labels for r in plain.tag(sentences)]
    # a model that tags B-Tool at window edges: alone, every sentence's first and last word sit at one
    edgy = SentenceTagger(small_windower, context_free_emitter(small_windower, {}, mark_edges=True), Decoder(LABELS))
    assert all(r.labels[0] == r.labels[-1] == "B-Tool" for r in edgy.tag(sentences) if r.labels)
    read = edgy.tag(sentences, neighbours=6)
    assert [len(r.labels) for r in read] == [5, 2, 0, 4]  # each sentence's own words only
    assert read[0].labels == ["B-Tool", "O", "O", "O", "O"]  # the text's own first word keeps its edge
    assert read[1].labels == ["O", "O"] and read[3].labels == ["O", "O", "O", "B-Tool"]
