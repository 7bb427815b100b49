"""Trace a WordTagger's encoder + emission layers into an ONNX graph.

The graph takes the four arrays of :class:`ner_batch.encoding.Batch` (dynamic batch,
token and word axes) and returns word-level ``emissions`` (B, W, L). Decoding is not in it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..encoding import Batch
from ..models.tagger import WordTagger

INPUT_NAMES = ["input_ids", "attention_mask", "word_index", "word_mask"]
OUTPUT_NAME = "emissions"
OPSET = 17


def export_onnx(model: WordTagger, sample: Batch, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model``'s forward pass, traced on ``sample``, to ``path``."""
    path = Path(path)
    model = model.eval()
    # The eager attention pattern is the one ONNX Runtime's transformer optimizer fuses.
    previous = getattr(model.encoder.config, "_attn_implementation", None)
    model.encoder.config._attn_implementation = "eager"
    args = tuple(torch.from_numpy(sample.inputs()[k]) for k in INPUT_NAMES)
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "word_index": {0: "batch", 1: "words"},
        "word_mask": {0: "batch", 1: "words"},
        OUTPUT_NAME: {0: "batch", 1: "words"},
    }
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                model, args, str(path), input_names=INPUT_NAMES, output_names=[OUTPUT_NAME],
                dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    finally:
        model.encoder.config._attn_implementation = previous
    return path
