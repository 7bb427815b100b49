"""Training-time rewrites of entity mentions, so that the model reads the context rather
than remembering names.

Three rewrites, drawn afresh each epoch, each mention at most one of them:

- **mention replacement** (Dai & Adel, 2020): a mention becomes another mention of the same
  type drawn from the training set (its length may change; its tags are rebuilt B-, I-, ...);
- **name masking**: in a mention of a name type (HackOrg, Tool, SamFile, SecTeam, Org), every
  name-like word (one with a capital letter or a digit that is not a generic head word such as
  "Group" or "Trojan") becomes a synthetic name of a realistic shape: a pseudo-word,
  CamelCase, ALL-CAPS with digits, hyphenated, with a version suffix. The string then carries
  no type; only the words around it do;
- **name swap**: in a mention of a name type, the name-like words become the name of a training
  mention of *another* name type, one train tags with that type only ("the PlugX backdoor" ->
  "the Lazarus backdoor", still Tool): the name points to the wrong type and the context to the
  right one, the case ``evaluate --swap-names cross-type`` probes.

A fourth rewrite works on whole sentences: **re-splitting** (``--resplit``) cuts a sentence's
tokens as the raw-text word splitter (``segment.py``) cuts text, so that the model also learns
from the words it meets when it tags raw reports (DNRTI keeps ``(EternalBlue)``, ``Intel®``,
``'s``, ``C&C`` as one token each; the splitter does not); tags are carried over to the pieces.
With ``--resplit-trim`` the pieces at an entity's edges that hold no letter or digit, and a final
possessive, are tagged ``O`` instead (``segment.trim_span``'s rule): the model learns the name
without DNRTI's habit of keeping ``(``, ``®`` or ``'s`` inside it, which an analyst's gold leaves out.

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
from ..names import mask_names, name_mention, rewrite_mentions, swap_name
from ..segment import join_words, trim_span, words as split_words


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    replace: float = 0.0  # probability that a mention is swapped for another of its type
    mask: float = 0.0  # probability that a name mention's name-like words become synthetic names
    swap: float = 0.0  # probability that a name mention's name becomes a train name of another name type
    resplit: float = 0.0  # probability that a sentence is cut into words as the raw-text splitter cuts it
    resplit_trim: bool = False  # re-split entities lose their edge punctuation and final possessive (tagged O)

    def __post_init__(self) -> None:
        for name in ("replace", "mask", "swap", "resplit"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"expected the {name} share between 0 and 1, got {p}")
        if self.replace + self.mask + self.swap > 1.0:
            shares = f"{self.replace} + {self.mask}" + (f" + {self.swap}" if self.swap else "")
            raise ValueError(f"expected --mention-replace + --name-mask{' + --name-swap' if self.swap else ''} at most 1, "
                             f"got {shares}")
        if self.resplit_trim and not self.resplit:
            raise ValueError("expected --resplit above 0 with --resplit-trim (it trims the entities of re-split sentences), got 0")

    @property
    def active(self) -> bool:
        return self.replace > 0 or self.mask > 0 or self.swap > 0 or self.resplit > 0


def mention_pool(sentences: Sequence[Sentence]) -> dict[str, list[tuple[str, ...]]]:
    """Every mention of the training set, by type (repeats kept: common names are drawn more)."""
    pool: dict[str, list[tuple[str, ...]]] = {}
    for s in sentences:
        for start, end, kind in bio_spans(s.labels):
            pool.setdefault(kind, []).append(tuple(s.tokens[start:end]))
    return pool


def augment(sentence: Sentence, pool: dict[str, list[tuple[str, ...]]], settings: AugmentSettings,
            rng: random.Random, donors: dict[str, list[tuple[str, ...]]] | None = None) -> Sentence:
    """The sentence with some mentions rewritten (see the module docstring); unchanged when
    no draw hits. Tags stay BIO-valid. ``pool``: ``mention_pool`` of train (mention
    replacement); ``donors``: ``names.donor_names`` of train (name swaps)."""

    def rewrite(words: list[str], kind: str) -> list[str] | None:
        r = rng.random()  # one draw per mention, whatever it holds
        if r < settings.mask and name_mention(words, kind):
            return mask_names(words, rng)
        if r < settings.mask + settings.replace and len(pool.get(kind, ())) > 1:
            return list(rng.choice(pool[kind]))
        if r < settings.mask + settings.replace + settings.swap and name_mention(words, kind):
            swapped = swap_name(words, kind, donors or {}, rng)
            return swapped[0] if swapped else None
        return None

    out = rewrite_mentions(sentence, rewrite)[0] if settings.replace or settings.mask or settings.swap else sentence
    if settings.resplit and rng.random() < settings.resplit:  # no draw at all without --resplit
        out = resplit(out, trim=settings.resplit_trim)
    return out


def resplit(sentence: Sentence, trim: bool = False) -> Sentence:
    """The sentence cut into words as ``segment.words`` cuts its tokens joined by spaces (the
    splitter never joins across a space, so token by token is the same), each piece tagged
    as its token: a ``B-X`` token gives ``B-X`` to its first piece and ``I-X`` to the rest.
    Entities keep their characters: ``"(EternalBlue)"`` tagged ``B-Tool`` becomes ``(``,
    ``EternalBlue``, ``)`` tagged ``B-Tool I-Tool I-Tool``.

    ``trim``: each entity then covers the pieces ``segment.trim_span`` keeps of its text, the
    others tagged ``O``: ``O B-Tool O`` above, ``APT28's`` -> ``APT28 ' s`` tagged ``B-HackOrg O O``;
    an entity with nothing left becomes ``O``.
    """
    tokens: list[str] = []
    labels: list[str] = []
    for token, label in zip(sentence.tokens, sentence.labels):
        for k, (s, e) in enumerate(split_words(token)):
            tokens.append(token[s:e])
            labels.append(label if k == 0 or label == "O" else "I-" + label[2:])
    if trim:
        text, (spans,) = join_words([tokens])  # each piece's (start, end) in the pieces joined by spaces
        trimmed = ["O"] * len(tokens)
        for a, b, kind in bio_spans(labels):
            kept = trim_span(text, spans[a][0], spans[b - 1][1])
            if kept is None:
                continue
            inside = [i for i in range(a, b) if kept[0] <= spans[i][0] and spans[i][1] <= kept[1]]
            for j, i in enumerate(inside):
                trimmed[i] = ("B-" if j == 0 else "I-") + kind
        labels = trimmed
    return dataclasses.replace(sentence, tokens=tokens, labels=labels)


def augment_all(sentences: Sequence[Sentence], pool: dict[str, list[tuple[str, ...]]], settings: AugmentSettings,
                rng: random.Random, donors: dict[str, list[tuple[str, ...]]] | None = None) -> list[Sentence]:
    return [augment(s, pool, settings, rng, donors) for s in sentences]
