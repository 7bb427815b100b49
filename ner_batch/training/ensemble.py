"""Output ensembles of trained runs (:class:`~ner_batch.models.ensemble.EnsembleTagger`):
every run's model tags the same windows and their emissions are averaged before the one
decode (softmax: mean log-probabilities; crf: mean emissions and CRF scores).

``evaluate --run A --run B ...`` scores one in PyTorch; ``export --run A --run B ...`` writes
it as one ONNX graph (a bundle that costs one encoder per run). Runs must share head,
labels, markers and window length; :func:`load_ensemble` names the first that does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .runs import RunError, model_dir


def load_ensemble(paths: Sequence[str | Path]):
    """``(EnsembleTagger, tokenizer)`` of the runs at ``paths`` (run directories or their
    ``best/``); raises RunError naming the first run that cannot share the others' encoder
    and decoder, or the first that holds no trained model."""
    from ..models.ensemble import EnsembleTagger, disagreement
    from ..models.tagger import load_model

    loaded = [load_model(model_dir(path)) for path in paths]
    models = [m.eval() for m, _ in loaded]
    bad = disagreement(models)
    if bad is not None:
        i, name = bad
        raise RunError(f"expected every run of an ensemble to have the {name} of {paths[0]} "
                       f"({getattr(models[0].config, name)!r}), got {getattr(models[i].config, name)!r} in {paths[i]}")
    return EnsembleTagger(models).eval(), loaded[0][1]


def load_runs(paths: Sequence[str | Path]):
    """``(model, tokenizer)``: the model of one run (a WordTagger, or an ensemble that
    ``calibrate RUN...`` saved), or the output ensemble of several runs. Raises RunError
    (a ValueError) or FileNotFoundError with one line on what is wrong."""
    from ..models.tagger import load_model

    if len(paths) == 1:
        return load_model(model_dir(paths[0]))
    return load_ensemble(paths)
