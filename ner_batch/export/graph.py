"""Trace a WordTagger's encoder + emission layers into an ONNX graph.

The graph takes the four arrays of :class:`ner_batch.encoding.Batch` (dynamic batch,
token and word axes) and returns word-level ``emissions`` (B, W, L). Decoding is not in it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from ..encoding import Batch
from ..models.ensemble import EnsembleTagger
from ..models.tagger import WordTagger

INPUT_NAMES = ["input_ids", "attention_mask", "word_index", "word_mask"]
OUTPUT_NAME = "emissions"
OPSET = 17


def eager_twin(model: WordTagger | EnsembleTagger) -> WordTagger | EnsembleTagger:
    """The same weights with eager attention: the pattern ONNX Runtime's optimizer fuses
    (SDPA traces differently, and some encoders pick their attention class at build time).
    An ensemble gets an eager twin of every member."""
    from transformers import AutoModel

    if isinstance(model, EnsembleTagger):
        return EnsembleTagger([eager_twin(m) for m in model.members]).eval()

    config = copy.deepcopy(model.encoder.config)
    encoder = AutoModel.from_config(config, attn_implementation="eager")
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    encoder.load_state_dict(model.encoder.state_dict())
    twin = WordTagger(model.config, encoder)
    twin.head = model.head
    return twin.eval()


def export_onnx(model: WordTagger | EnsembleTagger, sample: Batch, path: str | Path, opset: int = OPSET) -> Path:
    """Write ``model``'s forward pass, traced on ``sample``, to ``path``."""
    path = Path(path)
    model = eager_twin(model)
    args = tuple(torch.from_numpy(sample.inputs()[k]) for k in INPUT_NAMES)
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "word_index": {0: "batch", 1: "words"},
        "word_mask": {0: "batch", 1: "words"},
        OUTPUT_NAME: {0: "batch", 1: "words"},
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            model, args, str(path), input_names=INPUT_NAMES, output_names=[OUTPUT_NAME],
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return path
