"""Output ensembles of trained runs: every model tags the same windows and their emissions are
averaged before the one decode.

* softmax runs: the mean of the models' log-probabilities (a normalised geometric mean of
  their distributions), decoded with the BIO-constrained Viterbi;
* crf runs: the mean of the emissions and of the CRF's transition, start and end scores,
  decoded with Viterbi (the decode of one CRF whose scores are the members' mean).

It costs one model per member at tagging time, so it is a yardstick (what distillation,
``train --teacher``, tries to move into one model) and not a bundle: ``evaluate --run A
--run B ...`` scores it. Members must share head, labels, markers and window length, so that
one word encoder serves all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..decode import Decoder, log_softmax
from ..tagging import SentenceTagger
from .runs import RunError, model_dir
from .trainer import to_torch


def load_members(paths: Sequence[str | Path]) -> list:
    """``(model, tokenizer)`` per run (a run directory or its ``best/``), checked to agree on
    what one word encoder and one decoder need; raises RunError naming the first difference."""
    from ..models.tagger import load_model

    members = []
    for path in paths:
        model, tokenizer = load_model(model_dir(path))
        members.append((model.eval(), tokenizer))
    first = members[0][0].config
    for (model, _), path in zip(members[1:], paths[1:]):
        c = model.config
        for name in ("head", "labels", "shape_markers", "max_length"):
            if getattr(c, name) != getattr(first, name):
                raise RunError(f"expected every run of an ensemble to have the {name} of {paths[0]} "
                               f"({getattr(first, name)!r}), got {getattr(c, name)!r} in {path}")
    return members


def ensemble_tagger(members: Sequence) -> SentenceTagger:
    """One :class:`SentenceTagger` over the members' averaged emissions (see the module)."""
    models = [m for m, _ in members]
    config, tokenizer = models[0].config, members[0][1]

    @torch.no_grad()
    def emit(batch):
        inputs = to_torch(batch)
        outs = [m(**inputs).float().numpy() for m in models]  # each: (B, W, L)
        if config.head == "softmax":
            return np.mean([log_softmax(o) for o in outs], axis=0)  # shape: (B, W, L)
        return np.mean(outs, axis=0)  # shape: (B, W, L)

    params = None
    if config.head == "crf":
        each = [m.head.decoder_params() for m in models]
        params = {k: np.mean([p[k] for p in each], axis=0) for k in each[0]}
    return SentenceTagger(config.word_encoder(tokenizer), emit, Decoder(config.labels, params))
