"""Length-sorted token-budget batches: every window once, within budget, little padding."""

from __future__ import annotations

import random

from ner_batch.encoding import Window
from ner_batch.batching import plan_batches


def _windows(lengths):
    return [Window(i, 0, 1, [0] * n, [0]) for i, n in enumerate(lengths)]


def test_every_window_once_within_budget_and_cap():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(500)]
    windows = _windows(lengths)
    batches = list(plan_batches(windows, token_budget=1024, max_batch=16))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) <= 16
        assert max(lengths[i] for i in b) * len(b) <= 1024 or len(b) == 1
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    assert 1 - sum(lengths) / padded < 0.05  # sorting keeps padding low


def test_a_window_longer_than_the_budget_gets_a_batch_of_its_own():
    batches = list(plan_batches(_windows([50, 600, 40]), token_budget=512, max_batch=8))
    assert batches[0] == [1]
