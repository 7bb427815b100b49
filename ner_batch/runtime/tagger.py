"""The torch-free tagger: bundle + ONNX Runtime session + batching + NumPy decoding.

Per word it gives a label and a confidence: for the CRF, the marginal probability of the
chosen label (forward-backward); for softmax, the chosen label's probability. An entity's
score is the mean of its words' confidences.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..encoding import Batch, Window, WordEncoder
from ..labels import bio_spans
from .batching import stitch, tag_windows
from .bundle import Bundle, BundleError
from .decode import constrained_decode, forward_backward, viterbi
from .session import EmissionModel


@dataclasses.dataclass
class WordTags:
    labels: list[str]
    scores: list[float]

    def entities(self) -> list[tuple[int, int, str, float]]:
        """``(first_word, end_word_exclusive, type, score)`` per entity."""
        return [(s, e, t, float(np.mean(self.scores[s:e]))) for s, e, t in bio_spans(self.labels)]


class Tagger:
    def __init__(
        self,
        bundle: Bundle | str | Path,
        variant: str = "fp32",
        device: str = "auto",
        threads: int = 0,
        *,
        token_budget: int = 8192,
        max_batch: int = 32,
        say: Callable[[str], None] | None = None,
    ):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.variant = variant
        self.labels = self.bundle.labels
        self.encoder = WordEncoder.from_dir(self.bundle.path, self.bundle.max_length)
        self.model = EmissionModel(self.bundle.model_path(variant), device, threads, say=say)
        dim = self.model.session.get_outputs()[0].shape[-1]
        if isinstance(dim, int) and dim != len(self.labels):
            raise BundleError(f"{self.bundle.path}: expected the graph to emit {len(self.labels)} labels (labels.json), got {dim}")
        self.token_budget = token_budget
        self.max_batch = max_batch

    def emissions(self, batch: Batch) -> np.ndarray:
        """Word emissions (B, W, L) of a batch."""
        return self.model(batch.inputs())

    def decode(self, emissions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tags (B, W), confidence (B, W))`` from emissions (B, W, L) and lengths (B,)."""
        if emissions.shape[-1] != len(self.labels):
            raise BundleError(f"expected emissions over {len(self.labels)} labels, got {emissions.shape[-1]}")
        if self.bundle.crf is not None:
            p = self.bundle.crf
            tags, _ = viterbi(emissions, lengths, p["transitions"], p["start"], p["end"])
            probs, _ = forward_backward(emissions, lengths, p["transitions"], p["start"], p["end"])
        else:
            tags, probs = constrained_decode(emissions, lengths, self.labels)
        conf = np.take_along_axis(probs, tags[..., None], axis=-1)[..., 0]  # shape: (B, W)
        return tags, conf

    def run_batch(self, batch: Batch) -> list[tuple[list[int], list[float]]]:
        """Label ids and confidences per real word of each window in the batch."""
        return self.decode_batch(self.emissions(batch), batch)

    def decode_batch(self, emissions: np.ndarray, batch: Batch) -> list[tuple[list[int], list[float]]]:
        lengths = batch.word_mask.sum(1)
        tags, conf = self.decode(emissions, lengths)
        return [(tags[i, :n].tolist(), conf[i, :n].tolist()) for i, n in enumerate(lengths)]

    def tag_windows(self, windows: Sequence[Window]) -> list[tuple[list[int], list[float]]]:
        """Label ids and confidences per window, in the order given (length-sorted batches inside)."""
        return tag_windows(self.encoder, windows, self.run_batch, token_budget=self.token_budget, max_batch=self.max_batch)

    def tag_words(self, sentences: Sequence[Sequence[str]]) -> list[WordTags]:
        """Labels and confidences for pre-split sentences (windows stitched back)."""
        windows = self.encoder.windows(sentences)
        return self.word_tags(windows, self.tag_windows(windows), len(sentences))

    def word_tags(self, windows: Sequence[Window], results: Sequence[tuple[list[int], list[float]]], n_sentences: int) -> list[WordTags]:
        """Per-window (label ids, confidences) stitched back into one WordTags per sentence."""
        ids = stitch(windows, [r[0] for r in results], n_sentences)
        scores = stitch(windows, [r[1] for r in results], n_sentences)
        return [WordTags([self.labels[i] for i in t], s) for t, s in zip(ids, scores)]
