"""Ensemble distillation (`ner-batch train --teacher RUN ...`): the loss, the teachers' targets
lined up with the training words, the training path, and every wrong --teacher in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_tiny_model, tiny_splits, train_tiny_runs, write_tiny_data
from ner_batch.cli import main
from ner_batch.training.distill import TeacherError, distill_loss, load_teachers, target_tensor, teacher_targets
from ner_batch.training.runs import RunError
from ner_batch.training.trainer import TrainSettings, to_torch, train


def _brute_kl(p: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor, temperature: float) -> float:
    """Mean over real words of sum_l p log(p / q), q = softmax(logits / T), one word at a time."""
    terms = []
    for b in range(p.shape[0]):
        for w in range(p.shape[1]):
            if mask[b, w]:
                q = torch.softmax(logits[b, w] / temperature, dim=-1)
                terms.append(sum(float(pi) * (np.log(float(pi)) - np.log(float(qi))) for pi, qi in zip(p[b, w], q) if pi > 0))
    return float(np.mean(terms))


def test_distill_loss_against_its_definition():
    torch.manual_seed(0)
    emissions = torch.randn(2, 4, 5)  # shape: (B, W, L)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tags = torch.randint(0, 5, (2, 4))
    gold = torch.nn.functional.cross_entropy(emissions[mask.bool()], tags[mask.bool()])
    soft = torch.distributions.Dirichlet(torch.ones(5)).sample((2, 4))  # shape: (B, W, L)
    assert torch.equal(distill_loss(emissions, gold, soft, mask, 0.0, 2.0), gold)  # weight 0: the gold loss alone
    for weight, t in ((1.0, 1.0), (0.3, 3.0)):
        expected = (1 - weight) * float(gold) + weight * t**2 * _brute_kl(soft, emissions, mask, t)
        assert float(distill_loss(emissions, gold, soft, mask, weight, t)) == pytest.approx(expected, rel=1e-5)
    # one-hot targets at T = 1: KL to the gold label is the cross-entropy itself
    one_hot = torch.nn.functional.one_hot(tags, 5).float()
    assert float(distill_loss(emissions, gold * 0, one_hot, mask, 1.0, 1.0)) == pytest.approx(float(gold), rel=1e-5)
    # padding never counts, whatever it holds
    garbage = soft.clone()
    garbage[~mask.bool()] = 1e6
    assert float(distill_loss(emissions, gold, garbage, mask, 0.5, 2.0)) == pytest.approx(
        float(distill_loss(emissions, gold, soft, mask, 0.5, 2.0)), rel=1e-6)


def test_target_tensor_takes_each_example_s_rows_and_pads_with_zeros():
    targets = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    out = target_tensor([(1, 3), (3, 6)], targets, 4)
    assert out.shape == (2, 4, 3)
    assert torch.equal(out[0, :2], torch.from_numpy(targets[1:3])) and not out[0, 2:].any()
    assert torch.equal(out[1, :3], torch.from_numpy(targets[3:6])) and not out[1, 3:].any()


def test_teacher_targets_are_the_mean_of_each_teacher_s_tempered_softmax_word_by_word(tmp_path, tokenizer):
    runs = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))
    sentences = tiny_splits()["train"][:3] + [tiny_splits()["valid"][-1]]
    teachers = load_teachers(runs, make_tiny_model("softmax").config.labels)
    targets = teacher_targets(teachers, sentences, 2.0)
    assert targets.shape == (sum(len(s.tokens) for s in sentences), 7) and targets.dtype == np.float32
    assert np.allclose(targets.sum(1), 1.0, atol=1e-5)
    # oracle: every teacher on every sentence alone, straight through the model
    expected = []
    for s in sentences:
        per_teacher = []
        for model, tok in teachers:
            windower = model.config.windower(tok)
            with torch.no_grad():
                em = model(**to_torch(windower.collate(windower.windows([s.tokens]))))[0, : len(s.tokens)]  # shape: (n, L)
            per_teacher.append(torch.softmax(em / 2.0, dim=-1).numpy())
        expected.append(np.mean(per_teacher, axis=0))
    assert np.allclose(targets, np.concatenate(expected), atol=1e-5)
    assert not np.allclose(teacher_targets(teachers[:1], sentences, 2.0), teacher_targets(teachers[1:], sentences, 2.0))


def _train(tmp_path, tokenizer, name, **kw):
    settings = TrainSettings(head="softmax", epochs=2, lr=3e-3, head_lr=3e-3, batch_size=2, seed=13, data_seed=5,
                             dropout=0.3, context_share=0.5, **kw)
    notes = []
    metrics = train(settings, tmp_path / name, model=make_tiny_model("softmax", seed=0, dropout=0.3), tokenizer=tokenizer,
                    splits=tiny_splits(), progress=False, log=notes.append)
    return metrics, notes


def test_training_with_teachers_changes_only_the_loss(tmp_path, tokenizer):
    runs = [str(r) for r in train_tiny_runs(tmp_path, tokenizer, data_seeds=(1, 2))]
    plain, _ = _train(tmp_path, tokenizer, "plain")
    zero, notes = _train(tmp_path, tokenizer, "zero", teachers=tuple(runs), distill_weight=0.0)
    # weight 0: the same batches, dropout and steps as without teachers, so the same run
    assert [e["train_loss"] for e in zero["epochs"]] == [e["train_loss"] for e in plain["epochs"]]
    n_words = sum(len(s.tokens) for s in tiny_splits()["train"])
    assert any(f"distilling from 2 teachers (weight 0.0, temperature 2.0): targets for {n_words} words" in n for n in notes)
    full, _ = _train(tmp_path, tokenizer, "full", teachers=tuple(runs), distill_weight=1.0, distill_temperature=1.0)
    assert [e["train_loss"] for e in full["epochs"]] != [e["train_loss"] for e in plain["epochs"]]
    saved = json.loads((tmp_path / "full" / "metrics.json").read_text())["settings"]
    assert saved["teachers"] == runs and saved["distill_weight"] == 1.0 and saved["distill_temperature"] == 1.0
    assert "valid" in full and (tmp_path / "full" / "best" / "tagger.json").is_file()


@pytest.mark.parametrize("kw,message", [
    ({"head": "crf"}, "expected --head softmax with --teacher (a CRF's emissions are no distribution over labels to "
                      "match), got --head crf"),
    ({"name_mask": 0.2}, "expected no --mention-replace, --name-mask, --name-swap or --resplit with --teacher"),
    ({"name_swap": 0.2}, "expected no --mention-replace, --name-mask, --name-swap or --resplit with --teacher"),
    ({"distill_weight": 1.5}, "expected --distill-weight between 0 and 1, got 1.5"),
    ({"distill_temperature": 0.0}, "expected --distill-temperature above 0 (e.g. 2), got 0.0"),
])
def test_settings_refuse_what_cannot_be_distilled(kw, message):
    with pytest.raises(ValueError) as err:
        TrainSettings(teachers=("runs/softmax-d13",), **kw)
    assert str(err.value).startswith(message)


def test_teachers_that_cannot_teach_are_refused_by_name(tmp_path, tokenizer):
    (softmax,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,))
    (crf,) = train_tiny_runs(tmp_path, tokenizer, data_seeds=(1,), head="crf")
    labels = make_tiny_model("softmax").config.labels
    with pytest.raises(TeacherError, match=f"expected softmax teachers, got a crf model in {crf / 'best'}"):
        load_teachers([softmax, crf], labels)
    with pytest.raises(TeacherError, match="expected the teacher in .* to have the student's 8 labels in its order, got 7"):
        load_teachers([softmax], labels + ["B-Exp"])
    with pytest.raises(RunError, match=f"expected a trained model in {tmp_path / 'nothing'} for --teacher, found no tagger.json"):
        load_teachers([tmp_path / "nothing"], labels)


def test_cli_refuses_a_missing_teacher_in_one_line_and_writes_nothing(tmp_path):
    data = write_tiny_data(tmp_path / "data")
    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(data),
                                    "--teacher", str(tmp_path / "no-run")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip() == (f"Error: expected a trained model in {tmp_path / 'no-run'} for --teacher, "
                                  f"found no tagger.json (is the run finished?)")
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(main, ["train", "--head", "crf", "--out", str(tmp_path / "run"), "--data", str(data),
                                    "--teacher", str(tmp_path / "no-run")])
    assert res.exit_code == 2 and "expected --head softmax with --teacher" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()
