"""NumPy decoding against brute force and against pytorch-crf."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ner_batch.labels import allowed_transitions, bio_spans
from ner_batch.decode import bio_constraints, constrained_decode, forward_backward, viterbi

LABELS = ["O", "B-A", "I-A", "B-B", "I-B"]


def path_score(em, tags, trans, start, end):
    s = start[tags[0]] + em[0, tags[0]] + end[tags[-1]]
    for t in range(1, len(tags)):
        s += trans[tags[t - 1], tags[t]] + em[t, tags[t]]
    return s


def brute_force(em, n, trans, start, end):
    """Best path and log-partition by enumerating every tag sequence of length n."""
    n_labels = em.shape[1]
    scores = {p: path_score(em[:n], p, trans, start, end) for p in itertools.product(range(n_labels), repeat=n)}
    best = max(scores, key=scores.get)
    vals = np.array(list(scores.values()))
    log_z = vals.max() + np.log(np.exp(vals - vals.max()).sum())
    return list(best), scores[best], log_z, scores


def random_case(rng, b, w, n_labels):
    em = rng.normal(size=(b, w, n_labels)).astype(np.float32)
    trans = rng.normal(size=(n_labels, n_labels)).astype(np.float32)
    start = rng.normal(size=n_labels).astype(np.float32)
    end = rng.normal(size=n_labels).astype(np.float32)
    lengths = rng.integers(1, w + 1, size=b)
    lengths[0] = w
    return em, lengths, trans, start, end


def test_viterbi_equals_brute_force_on_tiny_inputs():
    rng = np.random.default_rng(0)
    for _ in range(60):
        em, lengths, trans, start, end = random_case(rng, b=4, w=4, n_labels=3)
        tags, scores = viterbi(em, lengths, trans, start, end)
        for i, n in enumerate(lengths):
            best, best_score, _, _ = brute_force(em[i], n, trans, start, end)
            assert tags[i, :n].tolist() == best
            assert (tags[i, n:] == 0).all()
            assert scores[i] == pytest.approx(best_score, abs=1e-4)


def test_viterbi_equals_pytorch_crf_on_thousands_of_cases():
    torch = pytest.importorskip("torch")
    from torchcrf import CRF

    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(60):
        n_labels = int(rng.integers(2, 28))
        b, w = int(rng.integers(1, 64)), int(rng.integers(1, 40))
        em, lengths, trans, start, end = random_case(rng, b, w, n_labels)
        crf = CRF(n_labels, batch_first=True)
        with torch.no_grad():
            crf.transitions.copy_(torch.from_numpy(trans))
            crf.start_transitions.copy_(torch.from_numpy(start))
            crf.end_transitions.copy_(torch.from_numpy(end))
        mask = torch.from_numpy(np.arange(w)[None, :] < lengths[:, None])
        expected = crf.decode(torch.from_numpy(em), mask=mask)
        tags, _ = viterbi(em, lengths, trans, start, end)
        assert [tags[i, :n].tolist() for i, n in enumerate(lengths)] == expected
        checked += b
    assert checked > 1000


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(2)
    em, lengths, trans, start, end = random_case(rng, b=16, w=12, n_labels=7)
    tags, scores = viterbi(em, lengths, trans, start, end)
    marg, log_z = forward_backward(em, lengths, trans, start, end)
    for i, n in enumerate(lengths):
        one, one_score = viterbi(em[i : i + 1, :n], lengths[i : i + 1], trans, start, end)
        assert one[0].tolist() == tags[i, :n].tolist()
        assert one_score[0] == pytest.approx(scores[i], abs=1e-4)
        m1, z1 = forward_backward(em[i : i + 1, :n], lengths[i : i + 1], trans, start, end)
        np.testing.assert_allclose(m1[0], marg[i, :n], atol=1e-5)
        assert z1[0] == pytest.approx(log_z[i], abs=1e-6)


def test_marginals_sum_to_one_and_match_brute_force():
    rng = np.random.default_rng(3)
    em, lengths, trans, start, end = random_case(rng, b=5, w=4, n_labels=3)
    marg, log_z = forward_backward(em, lengths, trans, start, end)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(marg[i, :n].sum(-1), 1.0, atol=1e-5)
        assert (marg[i, n:] == 0).all()
        _, _, z, scores = brute_force(em[i], n, trans, start, end)
        assert log_z[i] == pytest.approx(z, abs=1e-4)
        expected = np.zeros((n, 3))
        for path, s in scores.items():
            for t, tag in enumerate(path):
                expected[t, tag] += np.exp(s - z)
        np.testing.assert_allclose(marg[i, :n], expected, atol=1e-5)


def is_valid_bio(tags):
    prev = "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            return False
        prev = t
    return True


def test_constrained_decoding_never_emits_invalid_bio():
    rng = np.random.default_rng(4)
    for _ in range(50):
        logits = rng.normal(scale=3.0, size=(8, 15, len(LABELS))).astype(np.float32)
        logits[..., 2] += 2.0  # push towards I-A everywhere
        lengths = rng.integers(1, 16, size=8)
        tags, probs = constrained_decode(logits, lengths, LABELS)
        for i, n in enumerate(lengths):
            assert is_valid_bio([LABELS[t] for t in tags[i, :n]])
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_constrained_decoding_is_the_best_valid_path():
    rng = np.random.default_rng(5)
    trans, start, end = bio_constraints(LABELS)
    for _ in range(20):
        logits = rng.normal(size=(1, 4, len(LABELS))).astype(np.float32)
        tags, probs = constrained_decode(logits, np.array([4]), LABELS)
        logp = np.log(probs[0])
        valid = [p for p in itertools.product(range(len(LABELS)), repeat=4) if is_valid_bio([LABELS[t] for t in p])]
        best = max(valid, key=lambda p: sum(logp[t, k] for t, k in enumerate(p)))
        assert tags[0].tolist() == list(best)


def test_allowed_transitions_and_spans():
    start, trans = allowed_transitions(LABELS)
    assert start.tolist() == [True, True, False, True, False]
    assert trans[LABELS.index("B-A"), LABELS.index("I-A")]
    assert not trans[LABELS.index("O"), LABELS.index("I-A")]
    assert not trans[LABELS.index("I-B"), LABELS.index("I-A")]
    assert bio_spans(["B-A", "I-A", "O", "I-B", "B-B", "B-B"]) == [(0, 2, "A"), (3, 4, "B"), (4, 5, "B"), (5, 6, "B")]


def test_marginals_stay_finite_on_extreme_scores():
    rng = np.random.default_rng(6)
    em, lengths, trans, start, end = random_case(rng, b=8, w=60, n_labels=27)
    marg, log_z = forward_backward(em * 80, lengths, trans * 30, start * 30, end * 30)
    assert np.isfinite(marg).all() and np.isfinite(log_z).all()
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(marg[i, :n].sum(-1), 1.0, atol=1e-5)


# --- Decoder: one decode per sentence, long sentences in spliced segments -------------------

from ner_batch.decode import Decoder, segment_bounds  # noqa: E402


def _crf(rng, n_labels, scale=0.5):
    return {"transitions": (scale * rng.normal(size=(n_labels, n_labels))).astype(np.float32),
            "start": (scale * rng.normal(size=n_labels)).astype(np.float32),
            "end": (scale * rng.normal(size=n_labels)).astype(np.float32)}


def test_segment_bounds_cover_the_sentence_with_overlaps():
    assert segment_bounds(0, 10, 3) == []
    assert segment_bounds(10, 10, 3) == [(0, 10)]
    b = segment_bounds(25, 10, 3)
    assert b == [(0, 10), (7, 17), (14, 24), (21, 25)]


@pytest.mark.parametrize("crf", [True, False])
def test_long_sentences_decoded_in_segments_equal_one_pass(crf):
    rng = np.random.default_rng(5)
    labels = LABELS
    params = _crf(rng, len(labels)) if crf else None
    sentences = [(2.0 * rng.normal(size=(n, len(labels)))).astype(np.float32) for n in (3000, 1, 250, 777)]
    whole = Decoder(labels, params, max_words=10_000, overlap=64)(sentences)
    parts = Decoder(labels, params, max_words=200, overlap=64)(sentences)
    for (t1, c1), (t2, c2), em in zip(whole, parts, sentences):
        assert len(t2) == len(em)
        assert np.array_equal(t1, t2)
        np.testing.assert_allclose(c1, c2, atol=1e-4)
    if not crf:  # the spliced softmax path is still valid BIO
        allowed_start, allowed = allowed_transitions(labels)
        for tags, _ in parts:
            assert allowed_start[tags[0]] and all(allowed[a, b] for a, b in zip(tags, tags[1:]))


def test_a_sentence_decodes_the_same_whatever_shares_its_group():
    rng = np.random.default_rng(6)
    params = _crf(rng, len(LABELS), scale=1.0)
    sentences = [rng.normal(size=(int(n), len(LABELS))).astype(np.float32) for n in rng.integers(1, 60, size=40)]
    together = Decoder(LABELS, params)(sentences)
    small_groups = Decoder(LABELS, params, group_words=64)(sentences)
    for k, em in enumerate(sentences):
        [(alone_t, alone_c)] = Decoder(LABELS, params)([em])
        for tags, conf in (together[k], small_groups[k]):
            assert np.array_equal(tags, alone_t)
            np.testing.assert_allclose(conf, alone_c, atol=1e-6)


def test_decoder_rejects_emissions_of_the_wrong_width():
    with pytest.raises(ValueError, match="expected emissions over 5 labels, got 3"):
        Decoder(LABELS)([np.zeros((4, 3), dtype=np.float32)])
