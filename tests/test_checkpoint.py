"""`train --resume`: a run stopped after any epoch goes on and ends as if it had never stopped."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from conftest import make_tiny_model, tiny_splits, write_tiny_data
from ner_batch.cli import main
from ner_batch.training.checkpoint import CHECKPOINT, CheckpointError
from ner_batch.training.trainer import TrainSettings, train

SETTINGS = {  # dropout draws from torch's stream; the average and the anchor carry state of their own
    "crf": dict(head="crf", epochs=3, lr=3e-3, head_lr=3e-3, batch_size=2, dropout=0.3, seed=13, data_seed=14),
    "softmax, averaged, anchored, names swapped": dict(
        head="softmax", epochs=3, lr=3e-3, head_lr=3e-3, batch_size=2, dropout=0.3, seed=13, average=0.9,
        start_decay=1.0, name_swap=0.5),
}


class Killed(Exception):
    """Stands for the process dying: raised from the log callback when a line is said."""


def _run(out, settings, *, kill_at=None, resume=False, model_seed=0, stop_after=0):
    said = []

    def log(line):
        if kill_at is not None and line.startswith(kill_at):
            raise Killed(line)
        said.append(line)

    head = settings.head
    metrics = train(settings, out, model=make_tiny_model(head, seed=model_seed, dropout=settings.dropout),
                    tokenizer=_tokenizer(), splits=tiny_splits(), progress=False, log=log, resume=resume,
                    stop_after=stop_after)
    return metrics, said


_TOKENIZER = []


def _tokenizer():
    if not _TOKENIZER:
        from ner_batch.models.backbone import load_tokenizer

        _TOKENIZER.append(load_tokenizer("minilm"))
    return _TOKENIZER[0]


def _without_time(metrics):
    drop = {"wall_seconds", "torch_threads", "resumed_after_epochs"}
    out = {k: v for k, v in metrics.items() if k not in drop}
    out["epochs"] = [{k: v for k, v in e.items() if k != "seconds"} for e in metrics["epochs"]]
    return out


def _log_lines(out):
    """train.log without the epochs' times and the resume note."""
    text = (out / "train.log").read_text()
    return [re.sub(r"\[\d+s\]", "[s]", line) for line in text.splitlines() if not line.startswith("resumed after")]


@pytest.mark.parametrize("kind", list(SETTINGS))
@pytest.mark.parametrize("kill_at", ["epoch 2:", "epoch 3:"])  # before / after epoch 2's checkpoint; best/ may be newer
def test_a_resumed_run_ends_as_the_unstopped_run(tmp_path, kind, kill_at):
    settings = TrainSettings(**SETTINGS[kind])
    whole, _ = _run(tmp_path / "whole", settings)
    with pytest.raises(Killed):
        _run(tmp_path / "stopped", settings, kill_at=kill_at)
    assert (tmp_path / "stopped" / CHECKPOINT).is_file()
    resumed, said = _run(tmp_path / "stopped", settings, resume=True)

    after = int(kill_at.split()[1].rstrip(":")) - 1
    assert resumed["resumed_after_epochs"] == [after]
    assert any(line.startswith(f"resumed after epoch {after} of 3 from ") for line in said)
    assert _without_time(resumed) == _without_time(whole)
    assert json.loads((tmp_path / "stopped" / "metrics.json").read_text())["resumed_after_epochs"] == [after]
    for name in ("model.safetensors", "tagger.json", "labels.json"):
        assert (tmp_path / "stopped" / "best" / name).read_bytes() == (tmp_path / "whole" / "best" / name).read_bytes()
    assert _log_lines(tmp_path / "stopped") == _log_lines(tmp_path / "whole")
    assert not (tmp_path / "stopped" / CHECKPOINT).exists() and not (tmp_path / "whole" / CHECKPOINT).exists()


def test_stop_after_keeps_the_state_and_a_resumed_run_ends_as_the_unstopped_run(tmp_path):
    settings = TrainSettings(**SETTINGS["crf"])
    whole, _ = _run(tmp_path / "whole", settings)
    part, said = _run(tmp_path / "stopped", settings, stop_after=2)
    assert said[-1] == (f"stopped after epoch 2 of 3 as --stop-after asks: {tmp_path / 'stopped' / CHECKPOINT} keeps the "
                        f"state (--resume goes on, --branch-from {tmp_path / 'stopped'} starts a branch)")
    assert [e["epoch"] for e in part["epochs"]] == [1, 2] and "valid" not in part
    assert (tmp_path / "stopped" / CHECKPOINT).is_file()
    resumed, _ = _run(tmp_path / "stopped", settings, resume=True)
    assert resumed["resumed_after_epochs"] == [2] and _without_time(resumed) == _without_time(whole)
    last, said = _run(tmp_path / "last", settings, stop_after=3)  # the last epoch: nothing to stop, the run ends
    assert _without_time(last) == _without_time(whole) and not (tmp_path / "last" / CHECKPOINT).exists()


def test_a_run_stopped_by_patience_and_then_killed_resumes_to_its_final_scores_only(tmp_path):
    """At learning rate 0 no epoch beats the first: --patience 1 stops after epoch 2, whose checkpoint a
    resumed run goes on from straight to the best epoch's test scores, training no further epoch."""
    settings = TrainSettings(**{**SETTINGS["crf"], "lr": 0.0, "head_lr": 0.0, "epochs": 4, "patience": 1})
    whole, _ = _run(tmp_path / "whole", settings)
    assert [e["epoch"] for e in whole["epochs"]] == [1, 2] and whole["best_epoch"] == 1
    with pytest.raises(Killed):
        _run(tmp_path / "stopped", settings, kill_at="best epoch")
    resumed, said = _run(tmp_path / "stopped", settings, resume=True)
    assert resumed["resumed_after_epochs"] == [2] and not any(line.startswith("epoch ") for line in said)
    assert _without_time(resumed) == _without_time(whole)
    assert _log_lines(tmp_path / "stopped") == _log_lines(tmp_path / "whole")


def test_resume_without_a_checkpoint_starts_afresh_and_a_fresh_start_drops_a_stale_one(tmp_path):
    settings = TrainSettings(**SETTINGS["crf"])
    whole, _ = _run(tmp_path / "whole", settings)
    fresh, said = _run(tmp_path / "new", settings, resume=True)
    assert _without_time(fresh) == _without_time(whole) and "resumed_after_epochs" not in fresh
    assert not any(line.startswith("resumed after") for line in said)

    with pytest.raises(Killed):
        _run(tmp_path / "stopped", settings, kill_at="epoch 3:")
    again, said = _run(tmp_path / "stopped", settings)  # no --resume: the stopped run's state is not used
    assert any("a stopped run's state, is removed: this run starts afresh" in line for line in said)
    assert _without_time(again) == _without_time(whole) and "resumed_after_epochs" not in again


def test_resume_refuses_other_settings_a_finished_run_and_a_broken_checkpoint(tmp_path):
    settings = TrainSettings(**SETTINGS["crf"])
    out = tmp_path / "stopped"
    with pytest.raises(Killed):
        _run(out, settings, kill_at="epoch 2:")
    before = (out / "train.log").read_bytes()
    other = TrainSettings(**{**SETTINGS["crf"], "lr": 1e-3, "epochs": 4})
    with pytest.raises(CheckpointError, match=re.escape(
            f"expected the settings {out} started with, found --epochs 4 where the run has 3, --lr 0.001 where the "
            "run has 0.003: resume with the run's own command, or train into another --out")):
        _run(out, other, resume=True)
    assert (out / "train.log").read_bytes() == before  # refused before anything is written

    (out / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(f"expected a training checkpoint in {out / CHECKPOINT}, could "
                                                        "not read it (")):
        _run(out, settings, resume=True)
    torch.save({"version": 99}, out / CHECKPOINT)
    with pytest.raises(CheckpointError, match="expected a version 1 training checkpoint in .*, found 99: delete it"):
        _run(out, settings, resume=True)

    whole, _ = _run(tmp_path / "whole", settings)
    with pytest.raises(CheckpointError, match=re.escape(
            f"expected a stopped run in {tmp_path / 'whole'} to resume, found a finished one (best epoch "
            f"{whole['best_epoch']}, scored on valid): train into another --out")):
        _run(tmp_path / "whole", settings, resume=True)


def test_a_checkpoint_runs_no_code_when_read(tmp_path):
    """A checkpoint from elsewhere is read with weights_only: a pickle that would call a function is refused."""
    settings = TrainSettings(**SETTINGS["crf"])
    out = tmp_path / "hostile"
    out.mkdir()

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"version": 1, "settings": {}, "x": Payload()}, out / CHECKPOINT)
    with pytest.raises(CheckpointError, match="could not read it"):
        _run(out, settings, resume=True)


def test_the_cli_says_a_refusal_in_one_line(tmp_path):
    data = write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_text("truncated")
    res = CliRunner().invoke(main, ["train", "--out", str(out), "--data", str(data), "--resume"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"Error: expected a training checkpoint in {out / CHECKPOINT}, could not read it" in res.output
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT]
