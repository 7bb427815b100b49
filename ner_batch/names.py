"""What a name looks like in CTI text: the name types, the generic head words that say a type
in plain language ("Group", "backdoor"), which words are name-like, synthetic names of the
shapes CTI names take, and the train names that point to one type (for cross-type renames).

Torch-free: shared by training's rewrites (``training/augment.py``: name masking, name swaps)
and the context probe of ``evaluate --swap-names`` (``probe.py``).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable, Sequence

from .data.conll import Sentence
from .labels import bio_spans

NAME_TYPES = ("HackOrg", "Tool", "SamFile", "SecTeam", "Org")
# Head words that say the type in plain language; masking keeps them ("Lazarus Group" -> "Vokrel Group").
GENERIC = frozenset(
    "group groups team apt actor actors gang lab labs labs' trojan trojans backdoor backdoors rat rats malware "
    "ransomware worm loader dropper downloader implant toolkit tool tools framework exploit kit botnet stealer "
    "keylogger rootkit operation campaign security research researchers intelligence unit threat".split()
)
_CONSONANTS = "bcdfghjklmnprstvwxz"
_VOWELS = "aeiouy"
_ONSETS = ["br", "cr", "dr", "gr", "kr", "pl", "sh", "sk", "st", "tr", "th", "vl", "zh"]


Span = tuple[int, int, str]  # (start, end_exclusive, type)


def name_like(word: str) -> bool:
    """A word with a capital letter or a digit that is not a generic head word ("Group", "RAT")."""
    return any(c.isupper() or c.isdigit() for c in word) and word.lower() not in GENERIC


def name_mention(words: Sequence[str], kind: str) -> bool:
    """A mention of a name type with a name-like word: what name masking and swaps rewrite."""
    return kind in NAME_TYPES and any(name_like(w) for w in words)


def synthetic_name(rng: random.Random) -> str:
    """A made-up name of one of the shapes CTI names take."""

    def pseudo(syllables: int) -> str:
        out = rng.choice(_ONSETS) if rng.random() < 0.3 else rng.choice(_CONSONANTS)
        for k in range(syllables):
            out += rng.choice(_VOWELS) + (rng.choice(_CONSONANTS) if k < syllables - 1 or rng.random() < 0.7 else "")
        return out

    shape = rng.randrange(7)
    if shape == 0:  # Vokrel
        return pseudo(rng.randint(2, 3)).capitalize()
    if shape == 1:  # NetVokrel
        return pseudo(rng.randint(1, 2)).capitalize() + pseudo(rng.randint(1, 2)).capitalize()
    if shape == 2:  # KRV47
        return "".join(rng.choice(_CONSONANTS.upper()) for _ in range(rng.randint(2, 4))) + str(rng.randint(1, 999))
    if shape == 3:  # Vok-22, Vokrel-Zan
        tail = str(rng.randint(1, 99)) if rng.random() < 0.5 else pseudo(1).capitalize()
        return f"{pseudo(rng.randint(1, 2)).capitalize()}-{tail}"
    if shape == 4:  # Vokrel2, Vokrelv3.1
        return pseudo(rng.randint(2, 3)).capitalize() + rng.choice(["", "v"]) + rng.choice(
            [str(rng.randint(2, 9)), f"{rng.randint(1, 5)}.{rng.randint(0, 9)}"])
    if shape == 5:  # VOKREL
        return pseudo(rng.randint(1, 3)).upper()
    return pseudo(rng.randint(2, 3))  # lower case, as names appear in logs and file names


def donor_names(train: Sequence[Sentence]) -> dict[str, list[tuple[str, ...]]]:
    """The name-like words of every train mention of a name type, by type, for the names
    (lower-cased) that train tags with one type only; repeats kept, so common names are
    drawn more often. A name train tags both HackOrg and Tool would not point one way."""
    types_of: dict[str, set[str]] = {}
    found: list[tuple[str, tuple[str, ...]]] = []
    for s in train:
        for start, end, kind in bio_spans(s.labels):
            words = tuple(w for w in s.tokens[start:end] if name_like(w))
            if kind in NAME_TYPES and words:
                found.append((kind, words))
            types_of.setdefault(" ".join(words).lower(), set()).add(kind)
    donors: dict[str, list[tuple[str, ...]]] = {}
    for kind, words in found:
        if types_of[" ".join(words).lower()] == {kind}:
            donors.setdefault(kind, []).append(words)
    return donors


def rename(words: list[str], name: tuple[str, ...]) -> list[str]:
    """``words`` with its first name-like word replaced by ``name`` and its other name-like
    words dropped; generic words keep their places ("APT 28 group" -> "APT Lazarus group")."""
    out: list[str] = []
    placed = False
    for w in words:
        if not name_like(w):
            out.append(w)
        elif not placed:
            out += name
            placed = True
    return out


def mask_names(words: Sequence[str], rng: random.Random) -> list[str]:
    """``words`` with every name-like word a synthetic name ("Lazarus Group" -> "Vokrel Group")."""
    return [synthetic_name(rng) if name_like(w) else w for w in words]


def swap_name(words: list[str], kind: str, donors: dict[str, list[tuple[str, ...]]],
              rng: random.Random) -> tuple[list[str], str] | None:
    """``words`` renamed (:func:`rename`) with a donor name of a name type other than ``kind``,
    and that type; None when ``donors`` (:func:`donor_names`) has no other type."""
    others = [t for t in NAME_TYPES if t != kind and donors.get(t)]
    if not others:
        return None
    donor = rng.choice(others)
    return rename(words, rng.choice(donors[donor])), donor


def rewrite_mentions(sentence: Sentence, rewrite: Callable[[list[str], str], list[str] | None]
                     ) -> tuple[Sentence, list[tuple[Span, Span]]]:
    """``sentence`` with each mention's words, in order, replaced by ``rewrite(words, type)``
    (None: kept) and its tags rebuilt B-, I-, ...; and the ``(before, after)`` spans of every
    mention ``rewrite`` gave words for. The sentence itself when no word changed."""
    tokens, labels = sentence.tokens, sentence.labels
    out_t: list[str] = []
    out_l: list[str] = []
    moved: list[tuple[Span, Span]] = []
    pos, changed = 0, False
    for start, end, kind in bio_spans(labels):
        out_t += tokens[pos:start]
        out_l += labels[pos:start]
        words = list(tokens[start:end])
        new = rewrite(words, kind)
        if new is not None:
            moved.append(((start, end, kind), (len(out_t), len(out_t) + len(new), kind)))
            changed |= new != words
            words = new
        out_t += words
        out_l += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        pos = end
    if not changed:
        return sentence, moved
    out_t += tokens[pos:]
    out_l += labels[pos:]
    return dataclasses.replace(sentence, tokens=out_t, labels=out_l), moved
