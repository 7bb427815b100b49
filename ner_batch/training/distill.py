"""Ensemble distillation: train one softmax tagger on the averaged word-label distributions
of several trained ones (the teachers) beside the gold labels.

An output ensemble of runs tags better than any of them (DNRTI valid: the four softmax runs
d13..d16 averaged give 85.24 F1 against 84.03 for one run on average) but costs one model per
member at tagging time. Distillation (Hinton et al., 2015, "Distilling the Knowledge in a
Neural Network") moves part of that gain into one model of the same size and speed: for
every training word the student also matches the teachers' mean distribution over labels,
softened by a temperature ``T``::

    loss = (1 - a) * CE(gold) + a * T^2 * KL(p_teachers^T || softmax(z_student / T))

The teachers' distributions are computed once per run, on the training sentences one by
one through the tagging path (windows, stitching), in file order, so that row ``k`` of the
target array is the ``k``-th training word of :class:`~ner_batch.training.trainer.WordStream`,
whatever window the student sees it in. Only softmax teachers and a softmax student: a CRF's
emissions are no distribution over labels. Mention rewrites are refused beside it: a
rewritten word would be taught the original word's distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.conll import Sentence
from ..decode import log_softmax
from .runs import model_dir


class TeacherError(ValueError):
    """A --teacher that cannot teach this student."""


def teacher_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Each --teacher's model directory (a run's ``best/``, or the directory itself), checked
    to hold a trained model before any work is done; raises RunError naming the first that does not."""
    return [model_dir(path, " for --teacher") for path in paths]


def load_teachers(paths: Sequence[str | Path], labels: Sequence[str]) -> list:
    """The teachers' models (run directories or their ``best/``), checked: finished softmax
    runs over the student's labels, in the student's order."""
    from ..models.tagger import load_model

    teachers = []
    for best in teacher_dirs(paths):
        model, tokenizer = load_model(best)
        if model.config.head != "softmax":
            raise TeacherError(f"expected softmax teachers, got a {model.config.head} model in {best}: a CRF's emissions "
                               f"are no distribution over labels")
        if list(model.config.labels) != list(labels):
            raise TeacherError(f"expected the teacher in {best} to have the student's {len(labels)} labels in its order, "
                               f"got {len(model.config.labels)}: {model.config.labels[:4]}...")
        teachers.append((model.eval(), tokenizer))
    return teachers


def teacher_targets(teachers: Sequence, sentences: Sequence[Sentence], temperature: float) -> np.ndarray:
    """Mean over teachers of ``softmax(emissions / T)`` for every word of ``sentences``.

    Returns (N, L) float32, N the words of all sentences in order, L the labels. Each teacher
    reads the sentences with its own windower (its own markers), one sentence per window
    set, as the runtime does.
    """
    from .trainer import sentence_tagger

    words = [s.tokens for s in sentences]
    total: np.ndarray | None = None
    for model, tokenizer in teachers:
        tagger = sentence_tagger(model, model.config.windower(tokenizer))  # the path training scores valid with
        per_sentence = tagger.emissions(tagger.plan(words))  # each: (n_words, L)
        logits = np.concatenate(per_sentence, axis=0) if per_sentence else np.zeros((0, len(model.config.labels)), np.float32)
        probs = np.exp(log_softmax(logits / temperature))  # shape: (N, L)
        total = probs if total is None else total + probs
    assert total is not None, "no teachers"
    return (total / len(teachers)).astype(np.float32)


def target_tensor(spans: Sequence[tuple[int, int]], targets: np.ndarray, width: int) -> torch.Tensor:
    """Rows ``targets[a:b]`` of each example's word span, padded with zeros to ``width`` words.

    Returns (B, width, L)."""
    out = torch.zeros((len(spans), width, targets.shape[1]), dtype=torch.float32)  # shape: (B, W, L)
    for i, (a, b) in enumerate(spans):
        out[i, : b - a] = torch.from_numpy(targets[a:b])
    return out


def distill_loss(emissions: torch.Tensor, gold_loss: torch.Tensor, soft: torch.Tensor, word_mask: torch.Tensor,
                 weight: float, temperature: float) -> torch.Tensor:
    """``(1 - weight) * gold_loss + weight * T^2 * KL(soft || softmax(emissions / T))``, the
    KL averaged over real words.

    emissions (B, W, L) student logits; soft (B, W, L) teacher distributions; word_mask (B, W).
    """
    mask = word_mask.bool()  # shape: (B, W)
    log_q = torch.log_softmax(emissions[mask] / temperature, dim=-1)  # shape: (N, L)
    p = soft[mask]  # shape: (N, L)
    kl = (p * (torch.log(p.clamp_min(1e-12)) - log_q)).sum(-1).mean()
    return (1.0 - weight) * gold_loss + weight * temperature**2 * kl
