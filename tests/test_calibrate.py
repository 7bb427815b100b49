"""`ner-batch calibrate`: the "O" emission shifted by the amount that scores best on valid,
folded into the output layer's bias."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import LABELS, make_tiny_model, tiny_sentences, tiny_splits, train_tiny_runs, write_tiny_data
from ner_batch.cli import main
from ner_batch.data.conll import Sentence
from ner_batch.decode import Decoder
from ner_batch.labels import entity_types
from ner_batch.models.tagger import load_model
from ner_batch.training.calibrate import (DEFAULT_GRID, ShiftScorer, calibrate_run, cross_fit, fit_offset, parse_grid,
                                          type_labels)
from ner_batch.training.trainer import score_predictions
from ner_batch.training.runs import RunError, format_runs, run_row
from ner_batch.training.trainer import evaluate_model, to_torch


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_shift_label_moves_that_label_only_and_changes_no_weight_shape(head, windower):
    model = make_tiny_model(head)
    batch = to_torch(windower.collate(windower.windows([s.tokens for s in tiny_sentences()])))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(**batch)  # shape: (B, W, L)
        model.shift_label("O", 1.25)
        after = model(**batch)
    diff = after - before
    assert torch.allclose(diff[..., 0], torch.full_like(diff[..., 0], 1.25), atol=1e-5)
    assert torch.allclose(diff[..., 1:], torch.zeros_like(diff[..., 1:]), atol=1e-5)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    with pytest.raises(ValueError, match="expected a label among 7 in labels.json, got 'B-Malware'"):
        model.shift_label("B-Malware", 1.0)


def test_calibration_keeps_the_best_valid_shift_and_the_saved_model_scores_it(tmp_path, tokenizer):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    grid = (-1.0, 0.0, 0.5, 20.0)
    result = calibrate_run(run, tmp_path / "cal", grid=grid, splits=tiny_splits(), log=lambda _: None)
    entries = {e["shift"]: e for e in result["calibration"]}
    assert sorted(entries) == list(grid)
    assert entries[20.0]["valid_recall"] == 0.0  # "O" outweighs everything: nothing is tagged
    chosen = result["settings"]["calibrate"]["shift"]
    best = max(e["valid_f1"] for e in entries.values())
    assert entries[chosen]["valid_f1"] == best
    assert abs(chosen) == min(abs(s) for s, e in entries.items() if e["valid_f1"] == best)  # ties: closest to 0
    # the saved model is the run's, with the shift in the output bias, and scores what was recorded
    source, _ = load_model(run / "best")
    saved, tok = load_model(tmp_path / "cal" / "best")
    s0, s1 = source.state_dict(), saved.state_dict()
    bias = "head.emission.bias"
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if k != bias)
    assert torch.allclose(s1[bias] - s0[bias], torch.tensor([chosen] + [0.0] * 6), atol=1e-6)
    again = evaluate_model(saved, saved.config.windower(tok), tiny_splits()["valid"], tiny_splits()["train"])
    assert again["f1"] == result["valid"]["f1"] and again["unseen"]["f1"] == result["valid"]["unseen"]["f1"]
    assert result["settings"]["calibrate"]["run"] == str(run) and result["settings"]["head"] == "crf"
    row = run_row(tmp_path / "cal")
    assert row["calibrate"] == chosen and row["valid_f1"] == round(100 * result["valid"]["f1"], 2)
    assert f", O {chosen:+.2f}" in format_runs([row])
    # calibrating again adds up, and says so
    notes = []
    again = calibrate_run(tmp_path / "cal", tmp_path / "cal2", grid=(1.0,), splits=tiny_splits(), log=notes.append)
    assert again["settings"]["calibrate"]["shift"] == chosen + 1.0
    assert any("calibrated already" in n for n in notes)


def test_the_grid_is_read_strictly():
    assert parse_grid("1, -0.5,0,1") == (-0.5, 0.0, 1.0)
    assert 0.0 in DEFAULT_GRID and min(DEFAULT_GRID) == -1.0 and max(DEFAULT_GRID) == 3.0
    for text, message in ((" , ", "expected comma-separated numbers for --grid"),
                          ("0,a", "expected numbers in --grid, got 'a'"),
                          ("0,nan", "expected shifts between -20 and 20 in --grid, got nan"),
                          ("1e9", "expected shifts between -20 and 20 in --grid, got 1e9")):
        with pytest.raises(ValueError, match=message):
            parse_grid(text)


def test_calibrate_errors_are_one_line_and_write_nothing(tmp_path, tokenizer):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "metrics.json").write_text(json.dumps({"settings": {"head": "softmax"}, "epochs": []}))
    out = tmp_path / "out"
    cases = [
        ([str(run), "--out", str(run)], 1, f"expected --out other than the run itself ({run})"),
        ([str(unfinished), "--out", str(out)], 1, f"expected a finished run in {unfinished}"),
        ([str(tmp_path / "missing"), "--out", str(out)], 1, "expected a training run with"),
        ([str(run), "--out", str(out), "--grid", "0,x"], 2, "expected numbers in --grid, got 'x'"),
        ([str(run), "--out", str(out), "--select", "test"], 2, "'test' is not one of"),
        ([str(run), "--out", str(out), "--per-type", "--type-grid", "1,,z"], 2, "expected numbers in --type-grid, got 'z'"),
        ([str(run), "--out", str(out), "--per-type", "--cross-fit", "1"], 2, "expected 0 (none) or at least 2 folds, got 1"),
        ([str(run), "--out", str(out), "--cross-fit", "-2"], 2, "expected 0 (none) or at least 2 folds, got -2"),
    ]
    for args, code, message in cases:
        res = CliRunner().invoke(main, ["calibrate", *args])
        assert res.exit_code == code and message in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()


def random_scorer(seed: int, n: int = 12, head: str = "crf") -> ShiftScorer:
    """Random gold BIO sentences over the tiny labels and random emissions leaning towards them
    (so that shifts matter both ways); a CRF with random transitions, or the softmax decode."""
    rng = np.random.default_rng(seed)
    sentences, emissions = [], []
    for i in range(n):
        length = int(rng.integers(3, 9))
        labels, prev = [], "O"
        for _ in range(length):
            t = str(rng.choice(["O", "O", "Area", "HackOrg", "Tool"]))
            cont = prev != "O" and prev[2:] == t and rng.random() < 0.6
            labels.append("O" if t == "O" else ("I-" if cont else "B-") + t)
            prev = labels[-1]
        sentences.append(Sentence([f"w{i}x{j}" for j in range(length)], labels))
        em = rng.normal(0, 1.0, (length, len(LABELS))).astype(np.float32)  # shape: (n, L)
        em[np.arange(length), [LABELS.index(lab) for lab in labels]] += 1.2
        emissions.append(em)
    crf = None
    if head == "crf":
        crf = {"transitions": rng.normal(0, 0.5, (7, 7)), "start": rng.normal(0, 0.5, 7), "end": rng.normal(0, 0.5, 7)}
    train = sentences[: n // 3]  # a third of "valid" is seen in train, the rest unseen
    return ShiftScorer(emissions, sentences, train, Decoder(LABELS, crf))


def offset_of(o_shift: float, types: dict[str, float]) -> np.ndarray:
    offset = np.zeros(len(LABELS), dtype=np.float32)  # shape: (L,)
    offset[0] = o_shift
    for t, s in types.items():
        offset[[LABELS.index(lab) for lab in type_labels(LABELS, t)]] += s
    return offset


@pytest.mark.parametrize("seed,head", [(0, "crf"), (1, "crf"), (2, "softmax"), (3, "softmax")])
def test_per_type_fit_is_a_coordinate_optimum_checked_by_brute_force(seed, head):
    scorer = random_scorer(seed, head=head)
    grid, type_grid = (-0.5, 0.0, 0.5, 1.0), (-1.0, -0.5, 0.0, 0.5, 1.0)
    fit = fit_offset(scorer, grid=grid, type_grid=type_grid, passes=20)
    f1 = lambda offset: scorer.score(offset)["f1"]
    # the O shift: the brute-force best of the grid with no type shift, ties to the smallest |shift|
    o_scores = {s: f1(offset_of(s, {})) for s in grid}
    assert fit["shift"] == min((s for s in grid if o_scores[s] == max(o_scores.values())), key=abs)
    # the offset is the O shift plus each type's shift on its B- and I- rows, and scores what was recorded
    assert np.array_equal(fit["offset"], offset_of(fit["shift"], fit["types"]))
    assert fit["result"]["f1"] == f1(fit["offset"]) and fit["result"]["f1"] >= o_scores[fit["shift"]]
    assert fit["passes"] < 20  # converged: the last pass changed nothing
    # no single type's shift can be moved to score higher, nor to a smaller |shift| scoring the same
    types = entity_types(LABELS)
    for t in types:
        now = fit["types"].get(t, 0.0)
        for v in type_grid:
            trial = f1(offset_of(fit["shift"], {**fit["types"], t: v}))
            assert trial <= fit["result"]["f1"]
            if abs(v) < abs(now):
                assert trial < fit["result"]["f1"]
    # and every combination the search can reach is in the brute-force table it is the best "local" point of
    table = {combo: f1(offset_of(fit["shift"], dict(zip(types, combo)))) for combo in itertools.product(type_grid, repeat=3)}
    assert fit["result"]["f1"] == table[tuple(fit["types"].get(t, 0.0) for t in types)]
    assert fit["result"]["f1"] <= max(table.values())


def test_per_type_fit_without_types_is_o_only_and_one_pass_trace_names_every_type():
    scorer = random_scorer(4)
    o_only = fit_offset(scorer, grid=DEFAULT_GRID)
    assert o_only["types"] == {} and o_only["passes"] == 0 and o_only["trace"] == []
    one = fit_offset(scorer, grid=DEFAULT_GRID, type_grid=(0.25, 0.5), passes=1)  # no 0 in the grid: every type moves
    assert one["passes"] == 1 and [e["type"] for e in one["trace"]] == entity_types(LABELS)
    assert set(one["types"]) == set(entity_types(LABELS)) and one["shift"] == o_only["shift"]


def test_cross_fit_scores_each_part_with_the_numbers_fitted_on_the_others():
    scorer = random_scorer(5, n=11)
    calls = []

    def fit(idx):
        calls.append(list(idx))
        return fit_offset(scorer, idx, grid=DEFAULT_GRID, type_grid=(-0.5, 0.0, 0.5))

    result = cross_fit(scorer, 3, fit)
    parts = [[i for i in range(11) if i % 3 == k] for k in range(3)]
    assert calls == [[i for i in range(11) if i % 3 != k] for k in range(3)]  # never fitted on the part it labels
    predicted = [None] * 11
    for part, idx in zip(parts, calls):
        offset = fit_offset(scorer, idx, grid=DEFAULT_GRID, type_grid=(-0.5, 0.0, 0.5))["offset"]
        for i in part:
            predicted[i] = scorer.predict(offset, [i])[0]
    expected = score_predictions(scorer.sentences, predicted, scorer.train)
    assert result["f1"] == expected["f1"] and result["unseen"]["f1"] == expected["unseen"]["f1"]


def test_scorer_decodes_each_offset_and_sentence_set_once():
    scorer = random_scorer(6, n=10)
    decoder, decoded = scorer.decoder, []
    scorer.decoder = lambda ems: decoded.append(len(ems)) or decoder(ems)
    offset = offset_of(0.5, {"Tool": -0.5})
    first = scorer.score(offset)
    assert scorer.score(offset.copy()) is first and decoded == [10]  # the same offset again: not decoded again
    part = scorer.score(offset, [0, 2, 4])
    assert decoded == [10, 3] and part is not first and scorer.score(offset, (0, 2, 4)) is part
    scorer.score(offset_of(0.25, {"Tool": -0.5}))
    assert decoded == [10, 3, 10]
    # what a cached score says equals a fresh scorer's answer
    fresh = random_scorer(6, n=10)
    assert fresh.score(offset)["f1"] == first["f1"] and fresh.score(offset, [0, 2, 4])["f1"] == part["f1"]
    # a cross-fit of O-only then per-type fits (as calibrate --per-type runs them): the per-type fits' O sweeps are
    # the O-only fits' and are not decoded again; a fresh scorer decodes them, exactly 2 folds x the grid more
    def per_type_decodes(scorer, after_o_only):
        calls = []
        predict = scorer.predict
        scorer.predict = lambda offset, idx=None: calls.append(1) or predict(offset, idx)
        fit = lambda t: (lambda idx: fit_offset(scorer, idx, grid=DEFAULT_GRID, type_grid=t))
        if after_o_only:
            cross_fit(scorer, 2, fit(()))
            calls.clear()
        result = cross_fit(scorer, 2, fit((-0.5, 0.5)))
        return len(calls), result["f1"]

    (cached, f1_cached), (alone, f1_alone) = per_type_decodes(random_scorer(7), True), per_type_decodes(random_scorer(7), False)
    assert alone - cached == 2 * len(DEFAULT_GRID) and f1_cached == f1_alone


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_per_type_calibration_folds_every_shift_into_the_bias(head, tmp_path, tokenizer):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head=head)
    result = calibrate_run(run, tmp_path / "cal", grid=(0.0, 0.5), per_type=True, type_grid=(0.25, 0.75),
                           splits=tiny_splits(), log=lambda _: None)
    chosen = result["settings"]["calibrate"]
    assert set(chosen["types"]) == {"Area", "HackOrg", "Tool"}  # no 0 in the type grid: every type moved
    source, _ = load_model(run / "best")
    saved, tok = load_model(tmp_path / "cal" / "best")
    bias = "head.emission.bias" if head == "crf" else "head.classifier.bias"
    s0, s1 = source.state_dict(), saved.state_dict()
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if k != bias)
    assert torch.allclose(s1[bias] - s0[bias], torch.from_numpy(offset_of(chosen["shift"], chosen["types"])), atol=1e-6)
    again = evaluate_model(saved, saved.config.windower(tok), tiny_splits()["valid"], tiny_splits()["train"])
    assert again["f1"] == result["valid"]["f1"] and again["unseen"]["f1"] == result["valid"]["unseen"]["f1"]
    cross = chosen["cross_fit"]
    assert cross["folds"] == 2 and set(cross) == {"folds", "o_only", "per_type"}
    assert len(result["type_calibration"]) == chosen["type_passes"] * 3
    assert " and 3 type shifts" in format_runs([run_row(tmp_path / "cal")])
    # O-only calibration records no types and, unless asked, no cross-fit
    plain = calibrate_run(run, tmp_path / "plain", grid=(0.0, 0.5), splits=tiny_splits(), log=lambda _: None)
    assert "types" not in plain["settings"]["calibrate"] and "cross_fit" not in plain["settings"]["calibrate"]
    # O-only again on the per-type result: its type shifts stay, recorded with the grid that chose them, not this call's
    again = calibrate_run(tmp_path / "cal", tmp_path / "again", grid=(0.0, 0.5), type_grid=(-3.0, 3.0), splits=tiny_splits(),
                          log=lambda _: None)["settings"]["calibrate"]
    assert again["types"] == chosen["types"] and again["type_grid"] == [0.25, 0.75]
    assert again["type_passes"] == chosen["type_passes"]


def test_calibrate_cli_per_type_prints_the_shifts(tmp_path, tokenizer):
    (run,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    data = write_tiny_data(tmp_path / "data")
    res = CliRunner().invoke(main, ["calibrate", str(run), "--out", str(tmp_path / "cal"), "--data", str(data),
                                    "--per-type", "--type-grid", "0.5,1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(printed["types"]) == {"Area", "HackOrg", "Tool"}
    assert "cross-fitted (2 folds), per type: valid F1" in res.output
    # more folds than valid sentences (the tiny valid has 2): one line, nothing written
    res = CliRunner().invoke(main, ["calibrate", str(run), "--out", str(tmp_path / "cal3"), "--data", str(data),
                                    "--per-type", "--cross-fit", "3", "--threads", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip() == "Error: expected at least 3 valid sentences for --cross-fit 3, got 2: give fewer folds"
    assert not (tmp_path / "cal3").exists()
