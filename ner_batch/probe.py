"""The context probe of ``evaluate --swap-names``: how much of a model's typing of names comes
from the words around a name rather than from the name itself.

Every gold mention of a name type (HackOrg, Tool, SamFile, SecTeam, Org) that holds a
name-like word gets a new name; the words around it and its gold type stay:

- ``synthetic``: each name-like word becomes a made-up name of a realistic shape
  (``names.synthetic_name``, the generator of training's ``--name-mask``: a model trained
  with it has seen such names, though never these);
- ``cross-type``: the name-like words become the name of a training mention of *another* name
  type, one that train only ever tags with that type ("the PlugX backdoor" -> "the Lazarus
  backdoor"). The name now points to the wrong type and only the context to the right one:
  the failure issue 10 reports on real text, where new malware names read as group names.

The model tags the original and the rewritten sentences. For the rewritten mentions the probe
counts exact-span recall before and after, how often the mention still gets its gold type (the
type of the predicted span that overlaps it most, as ``evaluate``'s confusion table pairs
spans), and for ``cross-type`` how often it took the type of the name instead.

Torch-free: ``evaluate --bundle`` runs it with ONNX Runtime alone.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any, Sequence

from .data.conll import Sentence
from .evaluation import MISSED, pair_spans
from .labels import bio_spans
from .names import NAME_TYPES, mask_names, name_mention, rewrite_mentions, swap_name

SWAP_MODES = ("synthetic", "cross-type")


@dataclasses.dataclass(frozen=True)
class Swap:
    """One rewritten mention: where it is before and after the rewrite, and for
    ``cross-type`` the type its new name has in train ("" for ``synthetic``)."""

    sentence: int  # index of the sentence in the split
    before: tuple[int, int, str]  # gold span (start, end_exclusive, type) in the original sentence
    after: tuple[int, int, str]  # the same mention in the rewritten sentence
    donor: str = ""


def swap_names(sentences: Sequence[Sentence], mode: str, donors: dict[str, list[tuple[str, ...]]],
               rng: random.Random) -> tuple[list[Sentence], list[Swap]]:
    """The sentences with every name mention renamed (see the module docstring), and one
    ``Swap`` per renamed mention, in order. Tags stay BIO-valid; other mentions and words are
    unchanged. ``donors`` (``names.donor_names`` of train) is needed for ``cross-type`` only."""
    if mode not in SWAP_MODES:
        raise ValueError(f"expected a swap mode among {', '.join(SWAP_MODES)}, got {mode!r}")
    if mode == "cross-type" and sum(bool(donors.get(t)) for t in NAME_TYPES) < 2:
        raise ValueError("expected train names of at least two name types for --swap-names cross-type, "
                         f"found names of {sorted(t for t in NAME_TYPES if donors.get(t)) or 'none'}")
    out: list[Sentence] = []
    swaps: list[Swap] = []
    for index, sentence in enumerate(sentences):
        donor_types: list[str] = []  # the type of each new name, in mention order ("" for made-up names)

        def rewrite(words: list[str], kind: str) -> list[str] | None:
            if not name_mention(words, kind):
                return None
            if mode == "synthetic":
                donor_types.append("")
                return mask_names(words, rng)
            new, donor = swap_name(words, kind, donors, rng)  # never None: two donor types were checked above
            donor_types.append(donor)
            return new

        renamed, moved = rewrite_mentions(sentence, rewrite)
        out.append(renamed)
        swaps += [Swap(index, before, after, donor) for (before, after), donor in zip(moved, donor_types)]
    return out, swaps


def probe_scores(swaps: Sequence[Swap], before: Sequence[Sequence[str]], after: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Scores of the renamed mentions: ``before`` and ``after`` are the predicted tags of the
    original and the rewritten sentences.

    Returns ``{"mentions", "recall_before", "recall_after", "typed_right", "took_name",
    "per_type": {type: the same keys and "got": {predicted type or MISSED: n}}}``:
    exact-span recall before and after the rewrite, the share still given its gold type
    (any boundary), and the share given the type of the new name (``cross-type``; 0 for
    ``synthetic``)."""
    by_sentence: dict[int, list[Swap]] = {}
    for swap in swaps:
        by_sentence.setdefault(swap.sentence, []).append(swap)
    counts: dict[str, Counter] = {}
    got: dict[str, Counter] = {}
    for index, group in by_sentence.items():
        spans_before, spans_after = bio_spans(list(before[index])), bio_spans(list(after[index]))
        best_after, _ = pair_spans([s.after for s in group], spans_after)
        for swap, k in zip(group, best_after):
            kind = swap.before[2]
            typed = spans_after[k][2] if k >= 0 else MISSED
            c = counts.setdefault(kind, Counter())
            c["mentions"] += 1
            c["before"] += swap.before in spans_before
            c["after"] += swap.after in spans_after
            c["typed"] += typed == kind
            c["took"] += bool(swap.donor) and typed == swap.donor
            got.setdefault(kind, Counter())[typed] += 1

    def summary(c: Counter) -> dict[str, Any]:
        n = c["mentions"]
        share = (lambda key: c[key] / n) if n else (lambda key: 0.0)
        return {"mentions": n, "recall_before": share("before"), "recall_after": share("after"),
                "typed_right": share("typed"), "took_name": share("took")}

    result = summary(sum(counts.values(), Counter()))
    result["per_type"] = {kind: {**summary(c), "got": dict(got[kind].most_common())} for kind, c in sorted(counts.items())}
    return result


def format_probe(result: dict[str, Any], mode: str, seed: int, top: int = 3) -> str:
    """Two lines: the renamed mentions as a whole, then per type, largest first
    ("Tool 315: recall 79% -> 41%, typed Tool 52%; HackOrg 80, missed 52")."""
    how = ("made-up names (synthetic)" if mode == "synthetic"
           else "names train gives another type (cross-type)")
    took = f", took the new name's type {result['took_name']*100:.2f}" if mode == "cross-type" else ""
    lines = [f"context probe: {result['mentions']} name mentions renamed with {how}, seed {seed}: exact-span recall "
             f"{result['recall_before']*100:.2f} -> {result['recall_after']*100:.2f}, still given their type "
             f"{result['typed_right']*100:.2f}{took}"]
    parts = []
    for kind, r in sorted(result["per_type"].items(), key=lambda x: -x[1]["mentions"]):
        wrong = [(p, n) for p, n in r["got"].items() if p != kind][:top]
        detail = "; " + ", ".join(f"{p.strip('()')} {n}" for p, n in wrong) if wrong else ""
        parts.append(f"{kind} {r['mentions']}: recall {r['recall_before']*100:.0f}% -> {r['recall_after']*100:.0f}%, "
                     f"typed {kind} {r['typed_right']*100:.0f}%{detail}")
    if parts:
        lines.append("renamed mentions by type: " + " | ".join(parts))
    return "\n".join(lines)
