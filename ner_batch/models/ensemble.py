"""EnsembleTagger: several WordTaggers over the same word windows, their emissions averaged
into one set, so that one decode (and one exported graph) serves them all.

* softmax members: the mean of their log-probabilities (a normalised geometric mean of their
  distributions), which the BIO-constrained Viterbi then decodes;
* crf members: the mean of their emissions, decoded with the mean of their transition, start
  and end scores (:meth:`decoder_params`): the Viterbi of one CRF whose scores are the members' mean.

Saved (:meth:`EnsembleTagger.save`), it is a model directory like a run's ``best/``: an
``ensemble.json`` naming one sub-directory per member, each a saved WordTagger;
:func:`~ner_batch.models.tagger.load_model` loads either kind.

Its ``forward`` takes and returns what :class:`~ner_batch.models.tagger.WordTagger`'s does
(the four arrays of a batch in, word emissions ``(B, W, L)`` out), so it exports to an ONNX
graph of the same inputs and output, and the runtime tags with it unchanged; it costs one
encoder per member. Members must agree on head, labels, shape markers and window length, so
that one windower feeds all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .config import ENSEMBLE_FILE
from .tagger import WordTagger

#: What members must share, so that one windower and one decoder serve them all.
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
        # An ensemble among the members gives its own members (one level, so the graph's node
        # names stay /members.N/encoder/...): the result averages every model equally.
        members = [x for m in members for x in (m.members if isinstance(m, EnsembleTagger) else [m])]
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

    @torch.no_grad()
    def shift_label(self, label: str, delta: float) -> None:
        """Add ``delta`` to ``label``'s emission of every member. For crf members the mean
        emission moves by ``delta``; for softmax members each log-probability row changes by
        ``delta`` on ``label`` and by one constant on all labels, which neither the decode nor
        the confidences see: the same as adding ``delta`` to the ensemble's output."""
        for m in self.members:
            m.shift_label(label, delta)

    def save(self, directory: str | Path, tokenizer=None) -> None:
        """``directory/ensemble.json`` and each member as a saved WordTagger in ``directory/member-<i>``."""
        directory = Path(directory)
        names = [f"member-{i}" for i in range(len(self.members))]
        for name, m in zip(names, self.members):
            m.save(directory / name, tokenizer)
        (directory / ENSEMBLE_FILE).write_text(json.dumps({"members": names}, indent=1) + "\n")


def load_ensemble_dir(directory: str | Path) -> tuple[EnsembleTagger, object]:
    """The ensemble saved in ``directory`` and its (member 0's) tokenizer."""
    from .tagger import load_model

    directory = Path(directory)
    path = directory / ENSEMBLE_FILE
    try:
        names = json.loads(path.read_text())["members"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected a JSON object with a list of 'members', found {type(exc).__name__}: {exc}") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise ValueError(f"{path}: expected 'members' to be a non-empty list of sub-directory names, found {names!r}")
    loaded = [load_model(directory / n) for n in names]
    return EnsembleTagger([m for m, _ in loaded]).eval(), loaded[0][1]
