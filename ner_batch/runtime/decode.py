"""Sequence decoding in pure NumPy, vectorized over the batch.

Shapes: ``B`` sequences, ``W`` (padded) words, ``L`` labels. Every function takes
per-sequence ``lengths`` (shape ``(B,)``, each >= 1) instead of a mask, and ignores
positions at or past a sequence's length.

Scores follow pytorch-crf's model: the score of tags ``y`` for emissions ``e`` is
``start[y_0] + sum_t e[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_{n-1}]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..labels import allowed_transitions

#: Score given to a forbidden transition: finite, so that arithmetic stays NaN-free.
FORBIDDEN = -1e4


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax along ``axis``."""
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def viterbi(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Best tag sequence for each of ``B`` sequences.

    Args:
        emissions: ``(B, W, L)`` float scores per word and label.
        lengths: ``(B,)`` int, number of real words per sequence (>= 1).
        transitions: ``(L, L)`` score of moving from label ``i`` to label ``j``.
        start: ``(L,)`` score of starting with each label.
        end: ``(L,)`` score of ending with each label.

    Returns:
        ``(tags, scores)``: ``tags`` ``(B, W)`` int64 with ``0`` past each length,
        ``scores`` ``(B,)`` the best path's score.
    """
    emissions = np.asarray(emissions, dtype=np.float32)
    b, w, n_labels = emissions.shape
    lengths = np.asarray(lengths, dtype=np.int64)  # shape: (B,)
    rows = np.arange(b)
    score = start[None, :] + emissions[:, 0]  # shape: (B, L)
    history = np.zeros((max(w - 1, 0), b, n_labels), dtype=np.int64)  # shape: (W-1, B, L)
    for t in range(1, w):
        # shape: (B, L_from, L_to)
        cand = score[:, :, None] + transitions[None, :, :] + emissions[:, t, None, :]
        best_prev = cand.argmax(axis=1)  # shape: (B, L_to)
        best = np.take_along_axis(cand, best_prev[:, None, :], axis=1)[:, 0]  # shape: (B, L)
        history[t - 1] = best_prev
        score = np.where((t < lengths)[:, None], best, score)
    score = score + end[None, :]  # shape: (B, L)
    last = score.argmax(axis=1)  # shape: (B,)
    best_score = score[rows, last]  # shape: (B,)

    tags = np.zeros((b, w), dtype=np.int64)  # shape: (B, W)
    cur = last.copy()  # shape: (B,)
    for t in range(w - 1, -1, -1):
        is_last = t == lengths - 1
        inside = t < lengths - 1
        if t + 1 < w:
            prev = history[t][rows, cur]  # tag at t given the tag at t + 1
            cur = np.where(inside, prev, cur)
        cur = np.where(is_last, last, cur)
        tags[:, t] = np.where(t < lengths, cur, 0)
    return tags, best_score


def forward_backward(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-word label marginals of the linear-chain CRF.

    Args: as :func:`viterbi`.

    Returns:
        ``(marginals, log_z)``: ``marginals`` ``(B, W, L)`` with ``P(y_t = l | x)``
        (rows past a sequence's length are zero), ``log_z`` ``(B,)`` the log partition.
    """
    emissions = np.asarray(emissions, dtype=np.float64)
    b, w, n_labels = emissions.shape
    lengths = np.asarray(lengths, dtype=np.int64)  # shape: (B,)
    trans = np.asarray(transitions, dtype=np.float64)  # shape: (L, L)
    valid = np.arange(w)[None, :] < lengths[:, None]  # shape: (B, W)

    alpha = np.empty((b, w, n_labels))  # shape: (B, W, L)
    alpha[:, 0] = start[None, :] + emissions[:, 0]
    for t in range(1, w):
        nxt = _logsumexp(alpha[:, t - 1, :, None] + trans[None], axis=1) + emissions[:, t]  # shape: (B, L)
        alpha[:, t] = np.where(valid[:, t, None], nxt, alpha[:, t - 1])
    rows = np.arange(b)
    log_z = _logsumexp(alpha[rows, lengths - 1] + end[None, :], axis=1)  # shape: (B,)

    beta = np.empty((b, w, n_labels))  # shape: (B, W, L)
    beta[:, w - 1] = end[None, :]
    for t in range(w - 2, -1, -1):
        # beta[t, i] = logsumexp_j trans[i, j] + e[t+1, j] + beta[t+1, j]
        nxt = _logsumexp(trans[None] + (emissions[:, t + 1] + beta[:, t + 1])[:, None, :], axis=2)  # shape: (B, L)
        at_end = (t == lengths - 1)[:, None]
        beta[:, t] = np.where(at_end, end[None, :], nxt)
    marg = np.exp(alpha + beta - log_z[:, None, None])  # shape: (B, W, L)
    marg[~valid] = 0.0
    return marg.astype(np.float32), log_z


def bio_constraints(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transition, start and end scores that forbid invalid BIO sequences.

    Returns ``(transitions (L, L), start (L,), end (L,))``: 0 where allowed,
    :data:`FORBIDDEN` where not (``I-X`` after ``O`` or another type, or first).
    """
    allowed_start, allowed = allowed_transitions(labels)
    trans = np.where(allowed, 0.0, FORBIDDEN).astype(np.float32)  # shape: (L, L)
    start = np.where(allowed_start, 0.0, FORBIDDEN).astype(np.float32)  # shape: (L,)
    end = np.zeros(len(labels), dtype=np.float32)  # shape: (L,)
    return trans, start, end


def constrained_decode(logits: np.ndarray, lengths: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO-constrained best path of a softmax tagger, and its per-word probabilities.

    Args:
        logits: ``(B, W, L)`` unnormalized word-level scores.
        lengths: ``(B,)`` real words per sequence.
        labels: the ``L`` BIO labels.

    Returns:
        ``(tags (B, W), probs (B, W, L))`` where ``tags`` maximizes the sum of word
        log-probabilities among valid BIO sequences.
    """
    logp = log_softmax(np.asarray(logits, dtype=np.float32))  # shape: (B, W, L)
    trans, start, end = bio_constraints(labels)
    tags, _ = viterbi(logp, lengths, trans, start, end)
    return tags, np.exp(logp)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))
