"""Bootstrap intervals of F1 and of the difference between two taggers (evaluation.bootstrap,
`evaluate --against`), checked against seqeval on explicitly resampled sentence lists."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from seqeval.metrics import f1_score

from conftest import OTHER_SENTENCE, TINY_SENTENCES, write_tiny_data
from ner_batch.cli import main
from ner_batch.evaluation import bootstrap, f1_of, format_bootstrap, resample_weights, span_counts

TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]


def random_split(seed: int, n: int = 12):
    """Gold and predicted tags (ill-formed I- starts included) and an unseen mask."""
    rng = random.Random(seed)
    gold = [[rng.choice(TAGS) for _ in range(rng.randint(1, 7))] for _ in range(n)]
    pred = [[t if rng.random() < 0.6 else rng.choice(TAGS) for t in g] for g in gold]
    unseen = [rng.random() < 0.5 for _ in gold]
    return gold, pred, unseen


@pytest.mark.parametrize("seed", range(30))
def test_summed_span_counts_give_seqevals_f1(seed):
    gold, pred, unseen = random_split(seed)
    counts = span_counts(gold, pred)
    assert counts.shape == (len(gold), 3)
    assert f1_of(counts.sum(0)) == pytest.approx(f1_score(gold, pred, zero_division=0), abs=1e-12)
    part = np.array(unseen)
    g2 = [g for g, u in zip(gold, unseen) if u]
    p2 = [p for p, u in zip(pred, unseen) if u]
    assert f1_of(counts[part].sum(0)) == pytest.approx(f1_score(g2, p2, zero_division=0) if g2 else 0.0, abs=1e-12)


def test_f1_is_zero_when_nothing_is_predicted_or_gold():
    assert f1_of(np.array([0, 0, 0])) == 0.0
    assert f1_of(np.array([[0, 0, 3], [2, 2, 2]])).tolist() == [0.0, 1.0]


def test_resamples_keep_each_stratum_and_follow_the_seed():
    strata = np.array([True, False, False, True, False, False, False])
    w = resample_weights(strata, rounds=200, seed=3)
    assert w.shape == (200, 7) and (w >= 0).all()
    assert (w[:, strata].sum(1) == 2).all() and (w[:, ~strata].sum(1) == 5).all()
    assert (resample_weights(strata, 200, seed=3) == w).all()
    assert (resample_weights(strata, 200, seed=4) != w).any()
    # every sentence is drawn about as often as its stratum-mates (1 per round on average)
    assert np.allclose(resample_weights(strata, 20000, seed=0).mean(0), 1.0, atol=0.05)


def test_intervals_equal_seqeval_on_the_explicitly_resampled_sentences():
    gold, pred, unseen = random_split(7, n=10)
    _, other, _ = random_split(8, n=10)
    other = [o[: len(g)] + ["O"] * (len(g) - len(o)) for o, g in zip(other, gold)]
    rounds, seed = 40, 11
    got = bootstrap(span_counts(gold, pred), unseen, span_counts(gold, other), rounds=rounds, seed=seed)
    w = resample_weights(np.array(unseen), rounds, seed)
    for name, part in (("all", [True] * len(gold)), ("unseen", unseen)):
        mine, diffs = [], []
        for row in w:  # the oracle: each resample as a list of sentences, scored by seqeval
            picked = [i for i, (k, keep) in enumerate(zip(row, part)) if keep for _ in range(k)]
            f_a = f1_score([gold[i] for i in picked], [pred[i] for i in picked], zero_division=0)
            f_b = f1_score([gold[i] for i in picked], [other[i] for i in picked], zero_division=0)
            mine.append(f_a)
            diffs.append(f_a - f_b)
        assert got[name]["interval"] == pytest.approx(np.quantile(mine, [0.025, 0.975]).tolist(), abs=1e-12)
        d = got[name]["difference"]
        assert d["interval"] == pytest.approx(np.quantile(diffs, [0.025, 0.975]).tolist(), abs=1e-12)
        assert d["above_zero"] == pytest.approx(np.mean(np.array(diffs) > 0))
        keep = [i for i, k in enumerate(part) if k]
        point = f1_score([gold[i] for i in keep], [pred[i] for i in keep], zero_division=0)
        assert got[name]["f1"] == pytest.approx(point)


def test_a_tagger_against_itself_differs_by_nothing_and_a_perfect_one_always_wins():
    gold, pred, unseen = random_split(3)
    counts = span_counts(gold, pred)
    same = bootstrap(counts, unseen, counts, rounds=100)
    for part in ("all", "unseen"):
        assert same[part]["difference"] == {"f1": 0.0, "interval": [0.0, 0.0], "above_zero": 0.0}
        lo, hi = same[part]["interval"]
        assert 0.0 <= lo <= hi <= 1.0
    gold = [g for g in gold if any(t != "O" for t in g)]  # every sentence has an entity to find
    perfect = bootstrap(span_counts(gold, gold), None, span_counts(gold, [["O"] * len(g) for g in gold]), rounds=100)
    assert "unseen" not in perfect
    assert perfect["all"]["interval"] == [1.0, 1.0]
    assert perfect["all"]["difference"] == {"f1": 1.0, "interval": [1.0, 1.0], "above_zero": 1.0}
    text = format_bootstrap(perfect, against="B")
    assert "micro F1 100.00, 95% interval 100.00 to 100.00; minus B: +100.00" in text
    assert "higher in 100.0% of resamples" in text and "100 resamples" in text


def test_counts_of_another_split_are_refused():
    gold, pred, _ = random_split(1)
    with pytest.raises(ValueError, match=r"expected the compared tagger's counts for 12 sentences, got \(11, 3\)"):
        bootstrap(span_counts(gold, pred), None, span_counts(gold[1:], pred[1:]))


def _data(tmp_path):
    data = write_tiny_data(tmp_path / "data")
    lines = ["\n".join(f"{w} {t}" for w, t in zip(*s)) for s in TINY_SENTENCES + [OTHER_SENTENCE]]
    (data / "test.txt").write_text("\n\n".join(lines))  # one sentence train lacks: an unseen part
    return data


def test_evaluate_compares_two_bundles_on_the_same_sentences(tmp_path, tiny_bundles):
    data = _data(tmp_path)
    crf, softmax = str(tiny_bundles["crf"][0]), str(tiny_bundles["softmax"][0])
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--against", softmax, "--device", "cpu", "--data", str(data),
                               "--bootstrap", "50", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output.strip().splitlines()[-1])
    assert result["against"]["source"].startswith(f"bundle {softmax} (fp32")
    boot = result["bootstrap"]
    assert boot["rounds"] == 50 and set(boot) == {"rounds", "level", "seed", "all", "unseen"}
    for part, scored in (("all", result), ("unseen", result["unseen"])):
        other = result["against"] if part == "all" else result["against"]["unseen"]
        assert boot[part]["f1"] == pytest.approx(scored["f1"])
        assert boot[part]["difference"]["f1"] == pytest.approx(scored["f1"] - other["f1"])
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--against", softmax, "--device", "cpu", "--data", str(data)])
    assert res.exit_code == 0, res.output
    assert f"against bundle {softmax} (fp32, cpu): micro F1" in res.output
    assert "; minus against: " in res.output and "micro unseen F1" in res.output
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--device", "cpu", "--data", str(data), "--bootstrap", "0", "--json"])
    assert res.exit_code == 0 and "bootstrap" not in json.loads(res.output.strip().splitlines()[-1])


def test_evaluate_against_something_else_is_one_line(tmp_path, tiny_bundles):
    data = _data(tmp_path)
    crf = str(tiny_bundles["crf"][0])
    runner = CliRunner()
    missing = tmp_path / "nope"
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--against", str(missing), "--data", str(data)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == f"Error: expected a run directory or a bundle at --against {missing}, found nothing"
    (tmp_path / "file").write_text("x")
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--against", str(tmp_path / "file"), "--data", str(data)])
    assert res.exit_code == 2 and "'--against'" in res.output and "is a file" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["evaluate", "--bundle", crf, "--against", str(empty), "--data", str(data)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1] == f"Error: expected a trained model in {empty}, found no tagger.json (is the run finished?)"
    for rounds in ("-1", "10001"):  # a huge count would hold rounds x sentences weights in memory
        res = runner.invoke(main, ["evaluate", "--bundle", crf, "--data", str(data), "--bootstrap", rounds])
        assert res.exit_code == 2 and "--bootstrap" in res.output and "0<=x<=10000" in res.output
