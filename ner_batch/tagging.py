"""The one tagging path: sentences -> windows -> batches -> emissions -> one decode per sentence.

Torch-free. The runtime (ONNX Runtime), the CLI's shard workers, ``evaluate`` and training's
scoring (PyTorch) all go through :class:`SentenceTagger`; they differ only in ``emit``, the
function that turns a :class:`~ner_batch.encoding.Batch` into word emissions ``(B, W, L)``.

A sentence longer than a window is covered by overlapping windows; each word's emission is
taken from the window where it sits farthest from an edge (see
:meth:`~ner_batch.encoding.Windower.split`), the emissions are stitched into one
``(n_words, L)`` array per sentence, and the decoder runs once over the whole sentence. No
window border shows in the output, and a sentence's result does not depend on which other
sentences share its batches.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import numpy as np

from .batching import BatchSettings, plan_batches
from .decode import Decoder
from .encoding import Batch, Window, Windower
from .labels import bio_spans

Emit = Callable[[Batch], np.ndarray]  # batch -> word emissions (B, W, L)


@dataclasses.dataclass
class SentenceTags:
    """One sentence's result: a label and a confidence per word."""

    labels: list[str]
    scores: list[float]

    def entities(self) -> list[tuple[int, int, str, float]]:
        """``(first_word, end_word_exclusive, type, score)`` per entity; score = mean word confidence."""
        return [(s, e, t, float(sum(self.scores[s:e])) / (e - s)) for s, e, t in bio_spans(self.labels)]


@dataclasses.dataclass
class Plan:
    """Sentences made ready for the model: windows, and batches of them (window indices + arrays)."""

    lengths: list[int]  # words per sentence
    windows: list[Window]
    batches: list[tuple[list[int], Batch]]

    @property
    def n_sentences(self) -> int:
        return len(self.lengths)

    def pieces_per_sentence(self) -> np.ndarray:
        """Word pieces fed to the model per sentence (special tokens and overlaps included)."""
        out = np.zeros(len(self.lengths), dtype=np.int64)  # shape: (S,)
        for w in self.windows:
            out[w.sentence] += w.n_tokens
        return out


@dataclasses.dataclass
class TagStats:
    """What a run through the model cost (summed over calls)."""

    windows: int = 0
    word_pieces: int = 0
    positions: int = 0
    padded_positions: int = 0
    seconds_model: float = 0.0
    seconds_decode: float = 0.0


class SentenceTagger:
    """Pre-split sentences in, one :class:`SentenceTags` per sentence out."""

    def __init__(self, windower: Windower, emit: Emit, decoder: Decoder, batching: BatchSettings | None = None):
        self.windower = windower
        self.emit = emit
        self.decoder = decoder
        self.batching = batching or BatchSettings()

    @property
    def labels(self) -> list[str]:
        return self.decoder.labels

    def plan(self, sentences: Sequence[Sequence[str]], neighbours: int = 0) -> Plan:
        """Tokenize, window and batch (no model call: this part can run ahead on another thread).
        ``neighbours``: word pieces of the sentences around each one it also reads (see
        :meth:`~ner_batch.encoding.Windower.windows`)."""
        windows = self.windower.windows(sentences, neighbours) if sentences else []
        batches = [(idx, self.windower.collate([windows[i] for i in idx]))
                   for idx in plan_batches(windows, self.batching.token_budget, self.batching.max_batch)]
        return Plan([len(s) for s in sentences], windows, batches)

    def run(self, plan: Plan, stats: TagStats | None = None) -> list[SentenceTags]:
        """Emissions of every batch, stitched per sentence, then one decode per sentence."""
        stats = stats if stats is not None else TagStats()
        emissions = self.emissions(plan, stats)
        t0 = time.perf_counter()
        decoded = self.decoder(emissions)
        labels = self.labels
        result = [SentenceTags([labels[t] for t in tags.tolist()], conf.tolist()) for tags, conf in decoded]
        stats.seconds_decode += time.perf_counter() - t0
        return result

    def emissions(self, plan: Plan, stats: TagStats | None = None) -> list[np.ndarray]:
        """Each sentence's stitched emissions ``(n_words, L)``, before decoding."""
        stats = stats if stats is not None else TagStats()
        n_labels = len(self.labels)
        emissions = [np.zeros((n, n_labels), dtype=np.float32) for n in plan.lengths]  # per sentence: (n, L)
        for idx, batch in plan.batches:
            t0 = time.perf_counter()
            out = self.emit(batch)  # shape: (B, W, L)
            stats.seconds_model += time.perf_counter() - t0
            if out.shape[-1] != n_labels:
                raise ValueError(f"expected the model to emit {n_labels} labels, got {out.shape[-1]}")
            for row, i in zip(out, idx):
                w = plan.windows[i]
                a, b = w.own_start - w.word_start, w.own_end - w.word_start
                emissions[w.sentence][w.own_start : w.own_end] = row[a:b]
            stats.positions += batch.attention_mask.size
            stats.padded_positions += batch.attention_mask.size - int(batch.attention_mask.sum())
        stats.windows += len(plan.windows)
        stats.word_pieces += sum(w.n_tokens for w in plan.windows)
        return emissions

    def tag(self, sentences: Sequence[Sequence[str]], stats: TagStats | None = None, neighbours: int = 0) -> list[SentenceTags]:
        return self.run(self.plan(sentences, neighbours), stats)
