"""Repeated training sentences, kept once.

DNRTI's train split repeats sentences (5251 sentences, 3885 distinct; one appears 13 times),
so a plain epoch weighs a repeated sentence, and the names in it, once per copy.
:func:`unique_sentences` keeps each distinct token sequence once, at its first position (the
order of the rest stays, so consecutive sentences stay consecutive where no copy was
dropped), labelled as most of its copies are labelled (ties: the first copy's labels), and
says what it did. Torch-free: the reader's ground floor.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

from .conll import Sentence


@dataclasses.dataclass
class DedupReport:
    sentences: int  # before
    kept: int  # distinct token sequences
    relabelled: int  # distinct sentences whose copies disagree on labels (the most common labelling kept)

    def summary(self) -> str:
        if self.kept == self.sentences:
            return f"{self.sentences} sentences, none repeated"
        return (f"{self.sentences} sentences -> {self.kept} distinct ({self.sentences - self.kept} repeated copies "
                f"dropped; {self.relabelled} had copies labelled differently, the most common labelling kept)")


def unique_sentences(sentences: Sequence[Sentence]) -> tuple[list[Sentence], DedupReport]:
    """Each distinct token sequence once, in first-seen order, with its copies' most common labels."""
    labellings: dict[tuple[str, ...], collections.Counter] = {}
    first: dict[tuple[str, ...], Sentence] = {}  # file and line of the first copy stay with the kept sentence
    for s in sentences:
        key = tuple(s.tokens)
        first.setdefault(key, s)
        labellings.setdefault(key, collections.Counter())[tuple(s.labels)] += 1
    kept = []
    for key, s in first.items():  # first-seen order
        labels, _ = labellings[key].most_common(1)[0]  # Counter keeps first-seen order among equal counts
        kept.append(dataclasses.replace(s, tokens=list(key), labels=list(labels)))
    relabelled = sum(len(c) > 1 for c in labellings.values())
    return kept, DedupReport(len(sentences), len(kept), relabelled)
