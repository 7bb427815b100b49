"""Weight decay toward the weights a run starts from (L2-SP: Li, Grandvalet & Davoine, 2018,
"Explicit Inductive Bias for Transfer Learning with Convolutional Networks").

Plain weight decay pulls every weight matrix toward zero, which for a pre-trained encoder is
a pull away from what pre-training learnt. With ``--start-decay L`` the encoder's weight
matrices are pulled instead toward their values at the start of training (the pre-trained
backbone, or the model given to ``--init``): fine-tuning may move them where the labels ask,
but drift that the labels do not keep asking for (memorised names, noise of small batches)
decays back toward pre-training, where names are words like any other. The head, which
starts from random weights, keeps decaying toward zero by ``--weight-decay``.

The pull is decoupled from the gradient as AdamW's decay is. AdamW already shrinks an
anchored parameter ``w`` by ``lr * L * w`` inside its step (its group's ``weight_decay`` is
``L``); :meth:`StartAnchor.pull`, called right after the step and before the schedule moves
``lr``, adds back ``lr * L * w0``, so the step's decay term is ``-lr * L * (w - w0)``. Each
step closes the share ``lr * L`` of the distance to the start (at the encoder's peak lr of
2e-4, L = 5 closes 0.1% per step, about two thirds of a drift over the 1,000 steps of three epochs).
Tagging is unchanged: only training moves differently.
"""

from __future__ import annotations

import torch

ANCHOR_KEY = "anchor_to_start"  # a param group marked so by build_optimizer decays toward its start


class StartAnchor:
    """Holds a copy of every parameter in ``optimizer``'s groups marked with :data:`ANCHOR_KEY`."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.groups = [g for g in optimizer.param_groups if g.get(ANCHOR_KEY)]  # marked only with a start decay above 0
        if not self.groups:
            raise ValueError("expected at least one weight matrix to anchor to its start, got none "
                             "(is the encoder frozen, or the start decay 0?)")
        # shape: each start like its parameter
        self.start = [[p.detach().clone() for p in g["params"]] for g in self.groups]

    def pull(self) -> None:
        """Add ``lr * weight_decay * w0`` to each anchored ``w``: AdamW's step has just taken ``lr * weight_decay * w``."""
        with torch.no_grad():
            for group, starts in zip(self.groups, self.start):
                rate = group["lr"] * group["weight_decay"]
                for p, p0 in zip(group["params"], starts):
                    p.add_(p0, alpha=rate)
