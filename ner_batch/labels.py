"""BIO label scheme: validation, spans, and the transition rules of BIO.

Torch-free: used by training, export and the tagging runtime alike.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_BIO = re.compile(r"^(O|[BI]-\S+)$")


def is_bio_label(label: str) -> bool:
    return bool(_BIO.match(label))


def validate_labels(labels: Sequence[str], *, where: str = "labels") -> list[str]:
    """Check a label list is a BIO scheme with ``O`` and both ``B-X``, ``I-X`` per type."""
    labels = list(labels)
    bad = [lab for lab in labels if not is_bio_label(lab)]
    if bad:
        raise ValueError(f"{where}: expected BIO labels (O, B-TYPE, I-TYPE), found {bad[:5]}")
    if "O" not in labels:
        raise ValueError(f"{where}: expected an 'O' label, found none among {len(labels)} labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: labels repeat: {sorted({x for x in labels if labels.count(x) > 1})}")
    types = {lab[2:] for lab in labels if lab != "O"}
    missing = [f"{p}-{t}" for t in sorted(types) for p in "BI" if f"{p}-{t}" not in labels]
    if missing:
        raise ValueError(f"{where}: expected both B- and I- for every type, missing {missing}")
    return labels


def entity_types(labels: Sequence[str]) -> list[str]:
    return sorted({lab[2:] for lab in labels if lab != "O"})


def bio_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end_exclusive, type)`` of a BIO tag sequence.

    An ``I-X`` that does not continue an ``X`` entity starts a new one (as seqeval's
    default mode reads it), so no tagged word is ever dropped.
    """
    spans: list[tuple[int, int, str]] = []
    start, kind = -1, ""
    for i, tag in enumerate(tags):
        if tag == "O" or tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != kind):
            if start >= 0:
                spans.append((start, i, kind))
            start, kind = (-1, "") if tag == "O" else (i, tag[2:])
    if start >= 0:
        spans.append((start, len(tags), kind))
    return spans


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """BIO constraints as boolean masks.

    Returns ``(allowed_start, allowed_trans)`` with shapes ``(L,)`` and ``(L, L)``:
    a sequence may not start with ``I-X``; ``I-X`` may only follow ``B-X`` or ``I-X``.
    """
    n = len(labels)
    start = np.array([not lab.startswith("I-") for lab in labels])  # shape: (L,)
    trans = np.ones((n, n), dtype=bool)  # shape: (L_from, L_to)
    for j, to in enumerate(labels):
        if to.startswith("I-"):
            for i, frm in enumerate(labels):
                trans[i, j] = frm != "O" and frm[2:] == to[2:]
    return start, trans
