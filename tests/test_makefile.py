"""The Makefile's training graph, read with `make -n` (nothing runs): which runs each target
trains, with which settings, and that a finished run is not trained again."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _make_n(workdir: Path, *targets: str) -> str:
    """What `make -n TARGETS` prints in ``workdir`` (install taken as done): the commands it would run."""
    res = subprocess.run(["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(workdir), "-o", ".venv/.installed", *targets],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _dry_run(workdir: Path, *targets: str) -> list[str]:
    """The `ner-batch train` commands `make -n TARGETS` would run in ``workdir``."""
    return [line for line in _make_n(workdir, *targets).splitlines() if " train " in line]


def _option(command: str, name: str) -> str | None:
    found = re.search(rf" {name} (\S+)", command)
    return found.group(1) if found else None


def test_ensemble_runs_are_trained_with_the_dropout_and_data_seed_their_names_say(tmp_path):
    trains = {_option(c, "--out"): c for c in _dry_run(tmp_path, "export-ensemble", "ENSEMBLE_HEADS=crf")}
    expected = {f"runs/crf-do{p}-d{d}" for p in (20, 30) for d in (13, 14, 15, 16)}
    assert set(trains) == expected
    for out, command in trains.items():
        dropout, seed = re.fullmatch(r"runs/crf-do(\d\d)-d(\d+)", out).groups()
        assert float(_option(command, "--dropout")) == int(dropout) / 100, command
        assert _option(command, "--data-seed") == seed and _option(command, "--seed") == "13", command
        assert _option(command, "--head") == "crf" and _option(command, "--epochs") == "12", command


def test_the_default_crf_runs_keep_the_heads_default_dropout_and_finished_runs_are_not_retrained(tmp_path):
    trains = _dry_run(tmp_path, "train-crf")
    plain, swapped = [f"runs/crf-d{d}" for d in (13, 14, 15, 16)], [f"runs/crf-ns03-d{d}" for d in (13, 14, 15, 16)]
    assert [_option(c, "--out") for c in trains] == plain + swapped
    assert all(_option(c, "--dropout") is None for c in trains)
    for command in trains:  # the crf-ns03 runs, and only they, swap names at 0.03; all share --seed 13
        out = _option(command, "--out")
        assert _option(command, "--name-swap") == ("0.03" if out in swapped else None), command
        assert _option(command, "--seed") == "13" and _option(command, "--data-seed") == out.rsplit("-d", 1)[1], command
    for name in ("crf-d14", "crf-ns03-d16", "crf-do30-d15"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / ".done").touch()
    # a stopped training goes on where it stopped when make runs again
    assert all(c.endswith(" --resume") for c in trains + _dry_run(tmp_path, "train-softmax")
               + _dry_run(tmp_path, "export-ensemble")), trains
    left = [_option(c, "--out") for c in _dry_run(tmp_path, "train-crf")]
    assert left == [r for r in plain + swapped if r not in ("runs/crf-d14", "runs/crf-ns03-d16")]
    assert "runs/crf-do30-d15" not in {_option(c, "--out") for c in _dry_run(tmp_path, "export-ensemble", "ENSEMBLE_HEADS=crf")}


def test_the_crf_soup_takes_all_eight_runs_and_the_softmax_soup_its_four(tmp_path):
    def soup_runs(target):
        printed = _make_n(tmp_path, target)
        found = re.search(r'runs="([^"]*)"', printed)
        assert found, printed
        return found.group(1).split()

    assert soup_runs("train-crf") == [f"runs/crf-d{d}" for d in (13, 14, 15, 16)] + [f"runs/crf-ns03-d{d}" for d in (13, 14, 15, 16)]
    assert soup_runs("train-softmax") == [f"runs/softmax-d{d}" for d in (13, 14, 15, 16)]
