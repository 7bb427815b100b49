"""Adversarial training (--adversarial, FGM): the perturbation by hand, its restoring, that it
raises a tagger's loss, the refusals, and a training run that uses it."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import make_tiny_model, tiny_sentences, tiny_splits
from ner_batch.cli import main
from ner_batch.training.adversarial import EmbeddingAttack
from ner_batch.training.trainer import TrainSettings, make_examples, tag_tensor, to_torch, train


def test_the_perturbation_follows_the_gradient_with_norm_epsilon_and_is_undone_even_on_error():
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    weight.grad = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # norm 5: rows 1 and 2 only
    attack = EmbeddingAttack(weight, 0.5)
    with pytest.raises(RuntimeError, match="inside"):
        with attack.perturbed() as moved:
            assert moved
            expected = torch.tensor([[1.0, 2.0], [3.3, 4.0], [5.0, 6.4]])  # + 0.5 * g / 5
            assert torch.allclose(weight.detach(), expected)
            raise RuntimeError("inside")
    assert torch.equal(weight.detach(), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert torch.equal(weight.grad, torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))  # the gradient is kept


@pytest.mark.parametrize("grad", [None, torch.zeros(2, 2), torch.full((2, 2), float("nan"))])
def test_no_usable_gradient_means_no_attack(grad):
    weight = torch.nn.Parameter(torch.ones(2, 2))
    weight.grad = grad
    with EmbeddingAttack(weight, 1.0).perturbed() as moved:
        assert not moved and torch.equal(weight.detach(), torch.ones(2, 2))


def test_the_attack_raises_a_taggers_loss(windower):
    """To first order the step along the gradient is the steepest rise: a small step must raise
    the loss, the same step against the gradient must lower it (fails if the sign is wrong)."""
    model = make_tiny_model("crf", seed=3).train()
    examples = make_examples(windower, tiny_sentences(), {lab: i for i, lab in enumerate(model.config.labels)})
    inputs = to_torch(windower.collate([e.window for e in examples]))
    tags = tag_tensor(examples, inputs["word_mask"].shape[1])
    clean = model.loss(inputs, tags)
    clean.backward()
    weight = model.encoder.get_input_embeddings().weight
    attack = EmbeddingAttack(weight, 1e-2)
    with torch.no_grad(), attack.perturbed():
        raised = model.loss(inputs, tags)
    weight.grad.neg_()
    with torch.no_grad(), attack.perturbed():
        lowered = model.loss(inputs, tags)
    assert lowered < clean < raised


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"expected the adversarial step size above 0 \(e.g. 1.0\), got 0.0"):
        EmbeddingAttack(torch.nn.Parameter(torch.ones(1)), 0.0)
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    with pytest.raises(ValueError, match="expected trainable word-piece embeddings to attack, got frozen ones"):
        EmbeddingAttack(frozen, 1.0)
    with pytest.raises(ValueError, match=r"expected --adversarial of 0 \(off\) or above \(e.g. 1.0\), got -1.0"):
        TrainSettings(adversarial=-1.0)
    with pytest.raises(ValueError, match="expected --adversarial or --freeze-word-embeddings, not both"):
        TrainSettings(adversarial=1.0, freeze_word_embeddings=True)


@pytest.mark.parametrize("value", ["-2", "nan", "inf"])
def test_train_refuses_a_bad_adversarial_step_in_one_line(tmp_path, value):
    res = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path),
                                    "--adversarial", value])
    assert res.exit_code == 2 and f"expected --adversarial of 0 (off) or above (e.g. 1.0), got {float(value)}" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "run").exists()


def test_training_with_the_attack_logs_it_and_moves_the_weights_elsewhere(tmp_path, tokenizer):
    def run(name: str, adversarial: float) -> dict:
        settings = TrainSettings(head="crf", epochs=1, lr=3e-3, head_lr=3e-3, batch_size=2, adversarial=adversarial)
        log: list[str] = []
        train(settings, tmp_path / name, model=make_tiny_model("crf", seed=5), tokenizer=tokenizer, splits=tiny_splits(),
              progress=False, log=log.append)
        return {"log": "\n".join(log), "weights": load_file(str(tmp_path / name / "best" / "model.safetensors"))}

    plain, attacked = run("plain", 0.0), run("attacked", 1.0)
    assert "perturbed adversarially (step 1.0)" in attacked["log"] and "adversarially" not in plain["log"]
    # The tiny encoder has no dropout: the runs see the same batches, so only the second pass tells them apart.
    assert any(not torch.allclose(plain["weights"][k], attacked["weights"][k]) for k in plain["weights"])
    assert json.loads((tmp_path / "attacked" / "metrics.json").read_text())["settings"]["adversarial"] == 1.0
