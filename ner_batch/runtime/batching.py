"""Length-sorted, token-budget batching of windows, and stitching windows back to sentences.

Torch-free. Sorting windows by length before cutting batches keeps padding low; a batch
holds as many windows as fit in ``token_budget`` padded tokens (``B * T``), capped at
``max_batch``. On a CPU, batches beyond ~32 windows run no faster per token and widen the
length range inside a batch (more padding), hence the default.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

from ..encoding import Batch, Window, WordEncoder


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


def tag_windows(
    encoder: WordEncoder,
    windows: Sequence[Window],
    run: Callable[[Batch], list[list[int]]],
    *,
    token_budget: int = 8192,
    max_batch: int = 32,
) -> list[list[int]]:
    """Run ``run`` (batch -> label ids per real word of each window) over all windows.

    Returns the label ids per window, in the order of ``windows``.
    """
    out: list[list[int] | None] = [None] * len(windows)
    for idx in plan_batches(windows, token_budget, max_batch):
        batch = encoder.collate([windows[i] for i in idx])
        for i, tags in zip(idx, run(batch)):
            out[i] = tags
    return out  # type: ignore[return-value]


def stitch(windows: Sequence[Window], per_window: Sequence[Sequence], n_sentences: int) -> list[list]:
    """Concatenate per-window word results back into per-sentence lists."""
    sentences: list[list] = [[] for _ in range(n_sentences)]
    for w, items in zip(windows, per_window):
        if len(items) != w.n_words:
            raise ValueError(f"expected {w.n_words} results for a window, got {len(items)}")
        sentences[w.sentence].extend(items)
    return sentences
