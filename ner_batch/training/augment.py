"""Training-time rewrites of entity mentions, so that the model reads the context rather
than remembering names.

Two rewrites, drawn afresh each epoch, each mention at most one of them:

- **mention replacement** (Dai & Adel, 2020): a mention becomes another mention of the same
  type drawn from the training set (its length may change; its tags are rebuilt B-, I-, ...);
- **name masking**: in a mention of a name type (HackOrg, Tool, SamFile, SecTeam, Org), every
  name-like word (one with a capital letter or a digit that is not a generic head word such as
  "Group" or "Trojan") becomes a synthetic name of a realistic shape: a pseudo-word,
  CamelCase, ALL-CAPS with digits, hyphenated, with a version suffix. The string then carries
  no type; only the words around it do.

Valid and test are never rewritten for training (``evaluate --swap-names`` rewrites them to
measure how much the model reads the context: ``probe.py``). What a name looks like lives in
``names.py``, shared with that probe.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from ..data.conll import Sentence
from ..labels import bio_spans
from ..names import NAME_TYPES, name_like, synthetic_name


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    replace: float = 0.0  # probability that a mention is swapped for another of its type
    mask: float = 0.0  # probability that a name mention's name-like words become synthetic names

    def __post_init__(self) -> None:
        for name in ("replace", "mask"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"expected the {name} share between 0 and 1, got {p}")
        if self.replace + self.mask > 1.0:
            raise ValueError(f"expected --mention-replace + --name-mask at most 1, got {self.replace} + {self.mask}")

    @property
    def active(self) -> bool:
        return self.replace > 0 or self.mask > 0


def mention_pool(sentences: Sequence[Sentence]) -> dict[str, list[tuple[str, ...]]]:
    """Every mention of the training set, by type (repeats kept: common names are drawn more)."""
    pool: dict[str, list[tuple[str, ...]]] = {}
    for s in sentences:
        for start, end, kind in bio_spans(s.labels):
            pool.setdefault(kind, []).append(tuple(s.tokens[start:end]))
    return pool


def augment(sentence: Sentence, pool: dict[str, list[tuple[str, ...]]], settings: AugmentSettings,
            rng: random.Random) -> Sentence:
    """The sentence with some mentions rewritten (see the module docstring); unchanged when
    no draw hits. Tags stay BIO-valid."""
    tokens, labels = sentence.tokens, sentence.labels
    out_t: list[str] = []
    out_l: list[str] = []
    pos, changed = 0, False
    for start, end, kind in bio_spans(labels):
        out_t += tokens[pos:start]
        out_l += labels[pos:start]
        words = tokens[start:end]
        r = rng.random()
        if r < settings.mask and kind in NAME_TYPES and any(name_like(w) for w in words):
            new = [synthetic_name(rng) if name_like(w) else w for w in words]
        elif r < settings.mask + settings.replace and len(pool.get(kind, ())) > 1:
            new = list(rng.choice(pool[kind]))
        else:
            new = list(words)
        changed |= new != words
        out_t += new
        out_l += [f"B-{kind}"] + [f"I-{kind}"] * (len(new) - 1)
        pos = end
    if not changed:
        return sentence
    out_t += tokens[pos:]
    out_l += labels[pos:]
    return dataclasses.replace(sentence, tokens=out_t, labels=out_l)


def augment_all(sentences: Sequence[Sentence], pool: dict[str, list[tuple[str, ...]]], settings: AugmentSettings,
                rng: random.Random) -> list[Sentence]:
    return [augment(s, pool, settings, rng) for s in sentences]
