"""Adversarial training of the word-piece embeddings (FGM: Miyato, Dai & Goodfellow, 2017,
"Adversarial Training Methods for Semi-Supervised Text Classification").

A name the model has seen in training is recognised by its embedding rows; a new name
arrives with rows the training never tied to a type. FGM trains each batch twice: once as
it is, and once with the embedding matrix pushed a distance ``epsilon`` along the gradient
of the loss, the direction in which the words' vectors hurt the most, so the tagger has to
hold its labels when the words look a little different from what it learnt, and lean on
what else it sees. Both gradients are summed into one optimizer step (a run costs about
twice the time). Tagging is unchanged: nothing of this enters the saved model or the graph.

The perturbation is ``r = epsilon * g / ||g||`` with ``g`` the gradient of the whole
embedding matrix (its Frobenius norm), so it falls on the rows of the batch's word pieces
(the others have no gradient), and only those rows are moved and restored. With a zero or
missing gradient there is nothing to attack and the second pass is skipped.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class EmbeddingAttack:
    """Perturbs ``weight`` (shape: (vocab, hidden)) along its current gradient inside :meth:`perturbed`."""

    def __init__(self, weight: torch.nn.Parameter, epsilon: float):
        if not epsilon > 0.0:
            raise ValueError(f"expected the adversarial step size above 0 (e.g. 1.0), got {epsilon}")
        if not weight.requires_grad:
            raise ValueError("expected trainable word-piece embeddings to attack, got frozen ones "
                             "(drop --freeze-word-embeddings or --adversarial)")
        self.weight = weight
        self.epsilon = epsilon

    def step(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rows the weight's gradient touches and their perturbation, or None if the gradient is
        zero, absent or not finite. Only those rows move (the batch's word pieces: a few hundred of
        the vocabulary's 30k), so a step costs the batch's rows, not the whole matrix."""
        grad = self.weight.grad  # shape: (vocab, hidden)
        if grad is None:
            return None
        rows = torch.nonzero(grad.any(dim=1)).squeeze(1)  # shape: (touched,)
        part = grad[rows]  # shape: (touched, hidden)
        norm = torch.linalg.vector_norm(part)  # the whole gradient's norm: the other rows are zero
        if not torch.isfinite(norm) or norm == 0:
            return None
        return rows, self.epsilon * part / norm  # shape: (touched,), (touched, hidden)

    @contextlib.contextmanager
    def perturbed(self) -> Iterator[bool]:
        """Inside the block the embeddings carry the perturbation (yields True) or, with no gradient to
        follow, are untouched (yields False); the exact original values come back after, even on error."""
        step = self.step()
        if step is None:
            yield False
            return
        rows, r = step
        with torch.no_grad():
            original = self.weight[rows]  # shape: (touched, hidden); indexing copies
            self.weight.index_add_(0, rows, r)
        try:
            yield True
        finally:
            with torch.no_grad():
                self.weight.index_copy_(0, rows, original)
