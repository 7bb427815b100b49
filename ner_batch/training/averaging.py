"""Weight averaging: an exponential moving average of the trained weights (Polyak averaging).

SGD's last iterate sits wherever the last few batches pushed it; the average over the last
steps sits nearer the middle of the region they explored, which tends to generalize better
(Polyak & Juditsky, 1992; the "EMA" of many vision and language recipes). Training is not
changed: the optimizer keeps stepping the model's own weights, and the average only shadows
them. At each epoch's evaluation the averaged weights are swapped in, scored, saved when
best, and swapped out again, so one run scores both the trained and the averaged weights.

The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the
pretrained starting point is forgotten within the first few hundred steps.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"expected the weight-average decay strictly between 0 and 1, got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights in (call after each optimizer step)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), weight)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own come back after."""
        params = dict(model.named_parameters())
        missing = sorted(set(self.shadow) - set(params))
        if missing:
            raise ValueError(f"expected the averaged parameters in the model, found {len(missing)} missing: {missing[:3]}")
        with torch.no_grad():
            own = {name: params[name].detach().clone() for name in self.shadow}
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in own.items():
                    params[name].copy_(value)
