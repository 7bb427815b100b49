"""Softmax head: a linear layer over first-sub-word states (the DistilBERT recipe)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..decode import constrained_decode


class SoftmaxHead(nn.Module):
    def __init__(self, hidden: int, num_labels: int, dropout: float, labels: list[str]):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)
        self.labels = list(labels)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """``words`` (B, W, H) first-sub-word states -> emissions (B, W, L)."""
        return self.classifier(self.dropout(words))

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over real words."""
        mask = word_mask.bool()
        return nn.functional.cross_entropy(emissions[mask], tags[mask])

    def decode(self, emissions: torch.Tensor, word_mask: torch.Tensor) -> list[list[int]]:
        """BIO-constrained best path per sequence (the same NumPy decoder as the runtime)."""
        lengths = word_mask.sum(1).cpu().numpy()
        tags, _ = constrained_decode(emissions.detach().float().cpu().numpy(), lengths, self.labels)
        return [row[:n].tolist() for row, n in zip(tags, lengths)]

    def decoder_params(self) -> dict[str, np.ndarray]:
        return {}

    @property
    def output_layer(self) -> nn.Linear:
        """The linear layer whose outputs are the emissions."""
        return self.classifier
