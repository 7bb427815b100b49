"""Training windows as the runtime sees them: consecutive sentences, cut at any word."""

from __future__ import annotations

import random

from conftest import LABELS, TINY_SENTENCES

from ner_batch.data.conll import Sentence
from ner_batch.encoding import Windower
from ner_batch.training.trainer import WordStream, bucketed_batches, make_examples


def _sentences(n=60):
    return [Sentence(list(t), list(l)) for k in range(n) for t, l in [TINY_SENTENCES[k % 2]]]


def test_without_context_share_it_is_one_window_per_sentence(windower):
    sents = _sentences()
    l2i = {lab: i for i, lab in enumerate(LABELS)}
    plain = make_examples(windower, sents, l2i)
    stream = WordStream(windower, sents, l2i).examples(random.Random(0), 0.0)
    assert [e.window.input_ids for e in stream] == [e.window.input_ids for e in plain]
    assert [e.tags for e in stream] == [e.tags for e in plain]


def test_context_windows_cover_every_word_once_and_cross_sentences(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=40)
    sents = _sentences()
    l2i = {lab: i for i, lab in enumerate(LABELS)}
    examples = WordStream(windower, sents, l2i).examples(random.Random(1), 0.5, min_pieces=8)
    words = [w for e in examples for w in range(e.window.word_start, e.window.word_end)]
    assert words == list(range(sum(len(s.tokens) for s in sents)))  # every word once, in order
    all_tags = [l2i[t] for s in sents for t in s.labels]
    assert [t for e in examples for t in e.tags] == all_tags
    assert all(e.window.n_tokens <= 40 for e in examples)
    starts = {0}
    for s in sents:
        starts.add(max(starts) + len(s.tokens))
    assert any(e.window.word_start not in starts for e in examples)  # starts inside a sentence
    assert any(len(e.tags) > 9 for e in examples)  # longer than any one sentence: crosses a boundary


def test_batches_respect_the_token_cap(tokenizer):
    windower = Windower(tokenizer.backend_tokenizer, max_length=40)
    l2i = {lab: i for i, lab in enumerate(LABELS)}
    examples = WordStream(windower, _sentences(), l2i).examples(random.Random(2), 0.5, min_pieces=8)
    batches = bucketed_batches(examples, 16, random.Random(3), max_tokens=100)
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
    for b in batches:
        assert len(b) <= 16 and (len(b) == 1 or max(e.window.n_tokens for e in b) * len(b) <= 100)
