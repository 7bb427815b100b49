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
(the others have no gradient). With a zero or missing gradient there is nothing to attack
and the second pass is skipped.
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

    def step(self) -> torch.Tensor | None:
        """The perturbation for the gradient now held by the weight, or None if it is zero or absent."""
        grad = self.weight.grad  # shape: (vocab, hidden)
        if grad is None:
            return None
        norm = torch.linalg.vector_norm(grad)
        if not torch.isfinite(norm) or norm == 0:
            return None
        return self.epsilon * grad / norm  # shape: (vocab, hidden)

    @contextlib.contextmanager
    def perturbed(self) -> Iterator[bool]:
        """Inside the block the embeddings carry the perturbation (yields True) or, with no gradient to
        follow, are untouched (yields False); the exact original values come back after, even on error."""
        r = self.step()
        if r is None:
            yield False
            return
        with torch.no_grad():
            original = self.weight.detach().clone()
            self.weight.add_(r)
        try:
            yield True
        finally:
            with torch.no_grad():
                self.weight.copy_(original)
