"""`ner-batch calibrate`: the "O" emission shifted by the amount that scores best on valid,
folded into the output layer's bias."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import make_tiny_model, tiny_sentences, tiny_splits, train_tiny_runs
from ner_batch.cli import main
from ner_batch.models.tagger import load_model
from ner_batch.training.calibrate import DEFAULT_GRID, calibrate_run, parse_grid
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
    ]
    for args, code, message in cases:
        res = CliRunner().invoke(main, ["calibrate", *args])
        assert res.exit_code == code and message in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()
