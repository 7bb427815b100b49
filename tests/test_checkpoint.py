"""`train --resume`: a run stopped after any epoch goes on and ends as if it had never stopped."""

from __future__ import annotations

import dataclasses
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
    assert [e["epoch"] for e in part["epochs"]] == [1, 2] and "valid" not in part and part["stopped_after"] == 2
    from ner_batch.training.runs import format_runs, run_row

    assert (f"| 2 of 3 ({part['best_epoch']}), unfinished (train --resume goes on, --branch-from starts branches) |"
            in format_runs([run_row(tmp_path / "stopped")]))
    assert (tmp_path / "stopped" / CHECKPOINT).is_file()
    kept = (tmp_path / "stopped" / CHECKPOINT).read_bytes()
    again, said = _run(tmp_path / "stopped", settings, stop_after=2, resume=True)  # the trunk's command run twice
    assert said[-1] == (f"already stopped after epoch 2 of 3, at or past --stop-after 2: nothing trained "
                        f"({tmp_path / 'stopped' / CHECKPOINT} kept; without --stop-after, --resume goes on)")
    assert (tmp_path / "stopped" / CHECKPOINT).read_bytes() == kept and again["epochs"] == part["epochs"]
    resumed, _ = _run(tmp_path / "stopped", settings, resume=True)
    assert resumed["resumed_after_epochs"] == [2] and _without_time(resumed) == _without_time(whole)
    assert "stopped_after" not in json.loads((tmp_path / "stopped" / "metrics.json").read_text())
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


# --- branches: `train --branch-from TRUNK`, a run going on from another run's kept checkpoint ---

def _trunk(tmp_path, **change):
    settings = TrainSettings(**{**SETTINGS["crf"], **change})
    _run(tmp_path / "trunk", settings, stop_after=1)
    return settings


def test_a_branch_starts_from_the_trunk_state_and_draws_the_rest_from_its_data_seed(tmp_path):
    from ner_batch.training.checkpoint import branch, load_trunk, trunk_origin
    from ner_batch.training.trainer import build_optimizer

    _trunk(tmp_path)
    settings = TrainSettings(**{**SETTINGS["crf"], "data_seed": 15, "branch_from": str(tmp_path / "trunk")})
    payload = load_trunk(tmp_path / "trunk", dataclasses.asdict(settings))
    origin = trunk_origin(tmp_path / "trunk", payload)
    assert origin["epoch"] == 1 and origin["data_seed"] == 14 and origin["steps"] == payload["schedule"]["last_epoch"] > 0

    model = make_tiny_model("crf", seed=5, dropout=0.3)  # other weights than the trunk's
    opt, sched = build_optimizer(model, settings, total_steps=origin["steps"] + 20)
    done = branch(payload, origin, 15, model, opt, sched)
    for key, value in model.state_dict().items():
        assert torch.equal(value, payload["model"][key]), key
    assert sched.last_epoch == origin["steps"] and opt.state_dict()["state"].keys() == payload["optimizer"]["state"].keys()
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(15).get_state())  # the branch's own stream
    assert done.epoch == 1 and done.best_epoch == 0 and done.branch == origin
    assert [h["trunk"] for h in done.history] == [True]

    whole, said = _run(tmp_path / "branch", settings)
    assert any(line == f"branched after epoch 1 of 3 from {tmp_path / 'trunk'} (the trunk's data seed 14): epochs 2-3 "
               "drawn from data seed 15, the best epoch chosen among them" for line in said)
    assert whole["branched_from"] == origin and whole["best_epoch"] in (2, 3)
    trunk_epoch = json.loads((tmp_path / "trunk" / "metrics.json").read_text())["epochs"][0]
    assert whole["epochs"][0] == {**trunk_epoch, "trunk": True}
    assert [e.get("trunk", False) for e in whole["epochs"]] == [True, False, False]
    assert whole["epochs"][1]["valid_f1"] != trunk_epoch["valid_f1"] or whole["epochs"][1]["train_loss"] != trunk_epoch["train_loss"]
    assert (tmp_path / "trunk" / CHECKPOINT).is_file()  # the trunk's state stays for the next branch
    from ner_batch.training.runs import format_runs, run_row

    assert f"| 3 ({whole['best_epoch']}), branched after 1 |" in format_runs([run_row(tmp_path / "branch")])

    with pytest.raises(Killed):  # a branch stopped after its last epoch, before its final scores: schedule at its end
        _run(tmp_path / "killed", settings, kill_at="best epoch")
    state = torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)
    assert all(group["lr"] == 0.0 for group in state["optimizer"]["param_groups"])
    assert state["progress"]["branch"] == origin
    resumed, _ = _run(tmp_path / "killed", settings, resume=True)  # a branch resumes as a branch
    assert _without_time(resumed) == _without_time(whole) and resumed["branched_from"] == origin


def test_a_branch_refuses_other_settings_the_trunk_s_data_seed_and_no_trunk(tmp_path):
    trunk = _trunk(tmp_path)
    base = {**SETTINGS["crf"], "branch_from": str(tmp_path / "trunk")}
    with pytest.raises(CheckpointError, match=re.escape(
            f"expected the settings of the trunk {tmp_path / 'trunk'} but --data-seed, found --lr 0.001 where the trunk "
            "has 0.003: branch with the trunk's command and another --data-seed")):
        _run(tmp_path / "b1", TrainSettings(**{**base, "lr": 1e-3, "data_seed": 15}))
    with pytest.raises(CheckpointError, match=re.escape(
            "expected another --data-seed than the trunk's 14: a branch with the trunk's own is the trunk")):
        _run(tmp_path / "b2", TrainSettings(**base))
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()  # refused before anything is written
    with pytest.raises(CheckpointError, match=re.escape(
            f"expected a stopped run's {CHECKPOINT} to branch from at {tmp_path / 'nothing' / CHECKPOINT}, found none: "
            "train the trunk with --stop-after N first")):
        _run(tmp_path / "b3", TrainSettings(**{**base, "data_seed": 15, "branch_from": str(tmp_path / "nothing")}))
    _run(tmp_path / "trunk", trunk, resume=True)  # the trunk goes on to its end: no state left to branch from
    with pytest.raises(CheckpointError, match="found none: train the trunk with --stop-after N first"):
        _run(tmp_path / "b4", TrainSettings(**{**base, "data_seed": 15}))
    with pytest.raises(ValueError, match="expected --branch-from or --init, not both"):
        TrainSettings(**{**base, "data_seed": 15, "init": str(tmp_path / "trunk")})


def test_a_trunk_stopped_by_patience_has_nothing_to_branch(tmp_path):
    _trunk(tmp_path, lr=0.0, head_lr=0.0, patience=1, epochs=4)  # epoch 2 beats nothing: patience stops it there
    state = torch.load(tmp_path / "trunk" / CHECKPOINT, weights_only=True)
    assert state["progress"]["epoch"] == 1  # --stop-after 1 came first; now let patience stop a resumed trunk
    settings = TrainSettings(**{**SETTINGS["crf"], "lr": 0.0, "head_lr": 0.0, "patience": 1, "epochs": 4})
    with pytest.raises(Killed):
        _run(tmp_path / "trunk", settings, resume=True, kill_at="best epoch")
    with pytest.raises(CheckpointError, match=re.escape(
            f"expected a trunk with epochs left to train, found {tmp_path / 'trunk'} stopped after epoch 2 of 4 by "
            "--patience: stop the trunk earlier (--stop-after N)")):
        _run(tmp_path / "b", TrainSettings(**{**settings.__dict__, "data_seed": 15, "branch_from": str(tmp_path / "trunk")}))


def test_the_cli_branches_and_says_a_missing_trunk_in_one_line(tmp_path):
    data = write_tiny_data(tmp_path / "data")
    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "b"), "--data", str(data), "--data-seed", "15",
                                    "--branch-from", str(tmp_path / "none")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert f"Error: expected a stopped run's {CHECKPOINT} to branch from at {tmp_path / 'none' / CHECKPOINT}, found none" in res.output
