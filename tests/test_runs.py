"""`ner-batch runs`: training runs side by side from their metrics.json, and one clear line
for whatever is not a run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ner_batch.cli import main
from ner_batch.training.runs import RunError, format_runs, run_row


def _epoch(n, f1, unseen, new, raw=None):
    e = {"epoch": n, "valid_f1": f1, "valid_unseen_f1": unseen, "valid_new_name_recall": new}
    if raw is not None:
        e["trained_weights"] = {"valid_f1": raw[0], "valid_unseen_f1": raw[1], "valid_new_name_recall": raw[2]}
    return e


def _write(directory, metrics):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def _finished(tmp_path):
    return _write(tmp_path / "avg", {
        "settings": {"head": "crf", "epochs": 3, "average": 0.999},
        "epochs": [_epoch(1, 0.5, 0.4, 0.3, raw=(0.6, 0.5, 0.4)), _epoch(2, 0.8, 0.7, 0.6, raw=(0.7, 0.65, 0.5)),
                   _epoch(3, 0.8, 0.75, 0.6, raw=(0.75, 0.6, 0.55))],
        "best_epoch": 2, "wall_seconds": 3600.0,
        "valid": {"f1": 0.8}, "test": {"f1": 0.88, "unseen": {"f1": 0.74}, "new_names": {"new": {"recall": 0.61}}},
    })


def test_a_finished_averaged_run_gives_its_best_epoch_and_the_trained_weights_best(tmp_path):
    row = run_row(_finished(tmp_path))
    assert row["best_epoch"] == 2 and row["finished"] and row["epochs_run"] == 3  # first of equal valid F1s
    assert (row["valid_f1"], row["valid_unseen_f1"], row["valid_new_name_recall"]) == (80.0, 70.0, 60.0)
    assert (row["test_f1"], row["test_unseen_f1"], row["test_new_name_recall"]) == (88.0, 74.0, 61.0)
    assert row["trained_weights"] == {"best_epoch": 3, "valid_f1": 75.0, "valid_unseen_f1": 60.0, "valid_new_name_recall": 55.0}
    assert row["wall_minutes"] == 60.0
    table = format_runs([row]).splitlines()
    assert table[2].startswith(f"| {tmp_path / 'avg'}, averaged 0.999 | crf | 3 (2) | 80.00 | 70.00 | 60.00 | 88.00 | 74.00 | 61.00 | 60 |")
    assert table[3] == f"| {tmp_path / 'avg'}, trained weights | crf | (3) | 75.00 | 60.00 | 55.00 | – | – | – | same run |"


def test_a_run_still_going_shows_its_best_so_far_and_no_test(tmp_path):
    run = _write(tmp_path / "going", {"settings": {"head": "softmax", "epochs": 12}, "epochs": [_epoch(1, 0.55, 0.5, 0.4)],
                                      "best_epoch": 1, "wall_seconds": 540})
    row = run_row(run / "metrics.json")  # a metrics file itself works too
    assert not row["finished"] and row["test_f1"] is None and "trained_weights" not in row
    assert "| softmax | 1 of 12 (1), unfinished | 55.00 | 50.00 | 40.00 | – | – | – | 9 |" in format_runs([row])
    (run / "checkpoint.pt").write_bytes(b"")  # a stopped run with its state kept: --resume goes on
    assert "| softmax | 1 of 12 (1), unfinished (train --resume goes on) | 55.00 |" in format_runs([run_row(run)])


@pytest.mark.parametrize("content,message", [
    (None, "expected a training run with {d}/metrics.json, found no such file"),
    ("{not json", "{d}/metrics.json: expected JSON, got unreadable content"),
    ('{"best_epoch": 1}', "{d}/metrics.json: expected 'settings' and 'epochs' (written by `ner-batch train`), found neither"),
    ("[1, 2]", "expected 'settings' and 'epochs'"),
])
def test_what_is_not_a_run_is_refused_with_what_was_expected(tmp_path, content, message):
    d = tmp_path / "bad"
    d.mkdir()
    if content is not None:
        (d / "metrics.json").write_text(content)
    with pytest.raises(RunError) as err:
        run_row(d)
    assert message.format(d=d) in str(err.value)


def test_cli_skips_bad_runs_in_one_line_each_and_fails_only_when_none_is_left(tmp_path):
    good = _finished(tmp_path)
    res = CliRunner().invoke(main, ["runs", str(good), str(tmp_path / "missing")])
    assert res.exit_code == 0 and "averaged 0.999" in res.output
    assert f"skipped: expected a training run with {tmp_path / 'missing'}/metrics.json, found no such file" in res.output
    res = CliRunner().invoke(main, ["runs", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "expected at least one training run among 1 given, found none" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, ["runs", "--json", str(good)])
    assert json.loads(res.output)["trained_weights"]["best_epoch"] == 3


def test_the_trained_weights_best_follows_the_runs_select_score(tmp_path):
    run = _finished(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["settings"]["select"] = "valid-unseen"  # trained weights' unseen F1: 0.5, 0.65, 0.6 -> epoch 2, not 3
    _write(run, metrics)
    assert run_row(run)["trained_weights"] == {"best_epoch": 2, "valid_f1": 70.0, "valid_unseen_f1": 65.0,
                                               "valid_new_name_recall": 50.0}
