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
    em = np.asarray(emissions, dtype=np.float32)
    b, w, n_labels = em.shape
    lengths = np.asarray(lengths, dtype=np.int64)  # shape: (B,)
    trans = np.asarray(transitions, dtype=np.float32)  # shape: (L_from, L_to)
    rows = np.arange(b)
    # Forward pass over max-scores only, batch on the last (contiguous) axis, so that the max
    # over "from" is a reduction over the first axis: L vectorized passes of L * B elements.
    em_t = np.ascontiguousarray(em.transpose(1, 2, 0))  # shape: (W, L, B)
    alpha = np.empty((w, n_labels, b), dtype=np.float32)  # shape: (W, L, B)
    alpha[0] = np.asarray(start, dtype=np.float32)[:, None] + em_t[0]
    cand = np.empty((n_labels, n_labels, b), dtype=np.float32)  # shape: (L_from, L_to, B)
    trans_b = trans[:, :, None]  # shape: (L_from, L_to, 1)
    full = int(lengths.min())  # steps every sequence still takes
    for t in range(1, w):
        np.add(alpha[t - 1][:, None, :], trans_b, out=cand)
        nxt = cand.max(axis=0)  # shape: (L_to, B)
        nxt += em_t[t]
        alpha[t] = nxt if t < full else np.where(t < lengths, nxt, alpha[t - 1])
    final = alpha[lengths - 1, :, rows] + np.asarray(end, dtype=np.float32)[None, :]  # shape: (B, L)
    last = final.argmax(axis=1)  # shape: (B,)
    best_score = final[rows, last]  # shape: (B,)

    # Backtrack without a history of argmaxes: y_t = argmax_i alpha_t[i] + trans[i, y_{t+1}].
    tags = np.zeros((b, w), dtype=np.int64)  # shape: (B, W)
    cur = last.copy()  # shape: (B,)
    for t in range(w - 1, -1, -1):
        if t + 1 < w:
            prev = (alpha[t].T + trans[:, cur].T).argmax(axis=1)  # shape: (B,)
            cur = prev if t < full - 1 else np.where(t < lengths - 1, prev, cur)
        if t >= full - 1:
            cur = np.where(t == lengths - 1, last, cur)
        tags[:, t] = cur if t < full else np.where(t < lengths, cur, 0)
    return tags, best_score


def forward_backward(
    emissions: np.ndarray,
    lengths: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-word label marginals of the linear-chain CRF (scaled forward-backward).

    Works in probability space with a normalization per step (Rabiner's scaling), so each
    step is a ``(B, L) @ (L, L)`` product instead of a log-sum-exp over ``(B, L, L)``.

    Args: as :func:`viterbi`.

    Returns:
        ``(marginals, log_z)``: ``marginals`` ``(B, W, L)`` with ``P(y_t = l | x)``
        (rows past a sequence's length are zero), ``log_z`` ``(B,)`` the log partition.
    """
    em = np.asarray(emissions, dtype=np.float64)
    b, w, n_labels = em.shape
    lengths = np.asarray(lengths, dtype=np.int64)  # shape: (B,)
    valid = np.arange(w)[None, :] < lengths[:, None]  # shape: (B, W)
    shift = em.max(axis=2)  # shape: (B, W)
    e = np.exp(em - shift[..., None])  # shape: (B, W, L)
    t_shift = float(np.max(transitions))
    trans = np.exp(np.asarray(transitions, dtype=np.float64) - t_shift)  # shape: (L, L)
    s_shift, e_shift = float(np.max(start)), float(np.max(end))
    first = np.exp(np.asarray(start, dtype=np.float64) - s_shift)  # shape: (L,)
    last = np.exp(np.asarray(end, dtype=np.float64) - e_shift)  # shape: (L,)

    alpha = np.empty((b, w, n_labels))  # shape: (B, W, L), each row sums to 1
    scale = np.ones((b, w))  # shape: (B, W)
    a = first[None, :] * e[:, 0]  # shape: (B, L)
    scale[:, 0] = a.sum(axis=1)
    alpha[:, 0] = a / scale[:, 0, None]
    full = int(lengths.min())  # steps every sequence still takes: no masking needed there
    for t in range(1, w):
        a = (alpha[:, t - 1] @ trans) * e[:, t]  # shape: (B, L)
        c = a.sum(axis=1)  # shape: (B,)
        if t < full:
            alpha[:, t] = a / c[:, None]
        else:
            c = np.where(valid[:, t], c, 1.0)
            alpha[:, t] = np.where(valid[:, t, None], a / c[:, None], alpha[:, t - 1])
        scale[:, t] = c

    beta = np.empty((b, w, n_labels))  # shape: (B, W, L), scaled like alpha
    beta[:, w - 1] = last[None, :]
    trans_t = np.ascontiguousarray(trans.T)  # shape: (L_to, L_from)
    for t in range(w - 2, -1, -1):
        nb = ((e[:, t + 1] * beta[:, t + 1]) @ trans_t) / scale[:, t + 1, None]  # shape: (B, L)
        beta[:, t] = nb if t < full - 1 else np.where((t < lengths - 1)[:, None], nb, last[None, :])

    rows = np.arange(b)
    z = (alpha[rows, lengths - 1] * last[None, :]).sum(axis=1)  # shape: (B,)
    log_z = (np.log(scale).sum(axis=1) + np.log(z) + (shift * valid).sum(axis=1)
             + (lengths - 1) * t_shift + s_shift + e_shift)  # shape: (B,)
    marg = alpha * beta  # shape: (B, W, L)
    marg /= np.maximum(marg.sum(axis=2, keepdims=True), 1e-300)
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
