"""EnsembleTagger: several WordTaggers over the same word windows, their emissions averaged
into one set, so that one decode (and one exported graph) serves them all.

* softmax members: the mean of their log-probabilities (a normalised geometric mean of their
  distributions), which the BIO-constrained Viterbi then decodes;
* crf members: the mean of their emissions, decoded with the mean of their transition, start
  and end scores (:meth:`decoder_params`): the Viterbi of one CRF whose scores are the members' mean.

Its ``forward`` takes and returns what :class:`~ner_batch.models.tagger.WordTagger`'s does
(the four arrays of a batch in, word emissions ``(B, W, L)`` out), so it exports to an ONNX
graph of the same inputs and output, and the runtime tags with it unchanged; it costs one
encoder per member. Members must agree on head, labels, shape markers and window length, so
that one word encoder feeds all of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .tagger import WordTagger

#: What members must share, so that one word encoder and one decoder serve them all.
SHARED = ("head", "labels", "shape_markers", "max_length")


def disagreement(members: Sequence[WordTagger]) -> tuple[int, str] | None:
    """``(index, setting)`` of the first member whose setting differs from member 0's, or None."""
    first = members[0].config
    for i, m in enumerate(members[1:], start=1):
        for name in SHARED:
            if getattr(m.config, name) != getattr(first, name):
                return i, name
    return None


class EnsembleTagger(nn.Module):
    def __init__(self, members: Sequence[WordTagger]):
        super().__init__()
        if not members:
            raise ValueError("expected at least one model in an ensemble, got none")
        bad = disagreement(members)
        if bad is not None:
            i, name = bad
            raise ValueError(f"expected every model of an ensemble to have the {name} of model 0 "
                             f"({getattr(members[0].config, name)!r}), got {getattr(members[i].config, name)!r} in model {i}")
        self.members = nn.ModuleList(members)

    @property
    def config(self):
        """The members' shared settings (member 0's config)."""
        return self.members[0].config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Mean word emissions (B, W, L) of the members (log-probabilities for softmax members)."""
        outs = [m(input_ids, attention_mask, word_index, word_mask) for m in self.members]  # each: (B, W, L)
        if self.config.head == "softmax":
            outs = [torch.log_softmax(o, dim=-1) for o in outs]
        return torch.stack(outs).mean(0)  # shape: (B, W, L)

    def decoder_params(self) -> dict[str, np.ndarray]:
        """The mean of the members' decoder scores ({} for softmax members)."""
        each = [m.decoder_params() for m in self.members]
        return {k: np.mean([p[k] for p in each], axis=0).astype(np.float32) for k in each[0]}
