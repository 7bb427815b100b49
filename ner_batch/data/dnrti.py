"""DNRTI splits: where the files are, loading them, and the "unseen" part of a split.

The data directory is, in order: the ``--data`` option, ``$NER_BATCH_DATA``, or
``../shared/data/dnrti`` (relative to the working directory, then to the checkout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .conll import ReadReport, Sentence, read_conll

SPLITS = ("train", "valid", "test")
DEFAULT_RELATIVE = Path("..") / "shared" / "data" / "dnrti"
ENV_VAR = "NER_BATCH_DATA"


def data_dir(explicit: str | Path | None = None) -> Path:
    """The DNRTI directory to read, with a clear error if it is not there."""
    if explicit:
        candidates = [Path(explicit)]
    elif os.environ.get(ENV_VAR):
        candidates = [Path(os.environ[ENV_VAR])]
    else:
        checkout = Path(__file__).resolve().parents[2]
        candidates = [DEFAULT_RELATIVE, checkout / DEFAULT_RELATIVE]
    for c in candidates:
        if (c / "train.txt").is_file():
            return c
    raise FileNotFoundError(
        f"expected DNRTI's train.txt, valid.txt and test.txt in {candidates[0]}, found no train.txt there; "
        f"pass --data DIR or set {ENV_VAR}"
    )


def load_split(directory: str | Path | None, split: str, *, strict: bool = False) -> tuple[list[Sentence], ReadReport]:
    if split not in SPLITS:
        raise ValueError(f"expected a split among {SPLITS}, got {split!r}")
    return read_conll(data_dir(directory) / f"{split}.txt", strict=strict)


def unseen_mask(sentences: Sequence[Sentence], train: Sequence[Sentence]) -> list[bool]:
    """True for each sentence whose token sequence does not occur in ``train``."""
    seen = {tuple(s.tokens) for s in train}
    return [tuple(s.tokens) not in seen for s in sentences]
