"""Length-sorted, token-budget batching of windows.

Torch-free, on the ground floor (the runtime and training's scoring batch the same way). Sorting windows by length before cutting batches keeps padding low; a batch
holds as many windows as fit in ``token_budget`` padded tokens (``B * T``), capped at
``max_batch``. On a CPU, batches beyond ~32 windows run no faster per token and widen the
length range inside a batch (more padding), hence the default.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

from .encoding import Window


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """How windows are grouped for the model: at most ``token_budget`` padded word pieces
    and ``max_batch`` windows per batch."""

    token_budget: int = 8192
    max_batch: int = 32

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_batch < 1:
            raise ValueError(f"expected token_budget and max_batch of at least 1, got {self.token_budget} and {self.max_batch}")


def plan_batches(
    windows: Sequence[Window], token_budget: int = 8192, max_batch: int = 32, max_padding: float = 0.05, min_batch: int = 8
) -> Iterator[list[int]]:
    """Indices of ``windows`` grouped into batches of similar length (longest first).

    A batch closes when the next window would exceed ``token_budget`` padded tokens or
    ``max_batch`` windows, or, once it holds ``min_batch`` windows, would push its share of
    padding above ``max_padding``.
    """
    order = sorted(range(len(windows)), key=lambda i: (-windows[i].n_tokens, i))
    batch: list[int] = []
    width = real = 0
    for i in order:
        n = windows[i].n_tokens
        if batch:
            size = width * (len(batch) + 1)
            too_padded = len(batch) >= min_batch and 1 - (real + n) / size > max_padding
            if size > token_budget or len(batch) >= max_batch or too_padded:
                yield batch
                batch, real = [], 0
        if not batch:
            width = n  # sorted longest first: the first window sets the width
        batch.append(i)
        real += n
    if batch:
        yield batch
