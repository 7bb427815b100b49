"""The export check: ONNX Runtime emissions against PyTorch's, at shapes other than the traced one."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..encoding import Window, Windower
from ..models.tagger import WordTagger
from ..runtime.session import EmissionModel
from .graph import OUTPUT_NAME


class ExportCheckError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch beyond tolerance."""


def check_batches(windows: Sequence[Window], batch_sizes: Sequence[int]) -> list[list[Window]]:
    """Batches of the given sizes, cut from windows sorted by length so that each batch
    has its own token and word lengths (short, medium, long)."""
    ordered = sorted(windows, key=lambda w: w.n_tokens)
    batches: list[list[Window]] = []
    for k, size in enumerate(batch_sizes):
        at = int((len(ordered) - size) * k / max(1, len(batch_sizes) - 1)) if len(ordered) > size else 0
        batches.append(ordered[at : at + size])
    return [b for b in batches if b]


def max_abs_diff(
    model: WordTagger, onnx_path: str | Path, windower: Windower, batches: Sequence[Sequence[Window]]
) -> tuple[float, list[dict]]:
    """Largest |ORT - PyTorch| over the real words of every batch, and a row per batch."""
    ort_model = EmissionModel(onnx_path, device="cpu", say=lambda m: None)
    worst, rows = 0.0, []
    model.eval()
    for windows in batches:
        batch = windower.collate(windows)
        with torch.no_grad():
            ref = model(**{k: torch.from_numpy(v) for k, v in batch.inputs().items()}).numpy()
        got = ort_model(batch.inputs())
        if got.shape != ref.shape:
            raise ExportCheckError(f"{OUTPUT_NAME}: expected shape {ref.shape} from ONNX Runtime, got {got.shape}")
        mask = batch.word_mask.astype(bool)
        diff = float(np.max(np.abs(got[mask] - ref[mask])))
        rows.append({"batch": len(windows), "tokens": int(batch.input_ids.shape[1]), "words": int(mask.shape[1]), "max_abs_diff": diff})
        worst = max(worst, diff)
    return worst, rows


def check_export(
    model: WordTagger, onnx_path: str | Path, windower: Windower, batches: Sequence[Sequence[Window]], tolerance: float
) -> dict:
    """Raise :class:`ExportCheckError` when the difference exceeds ``tolerance``."""
    worst, rows = max_abs_diff(model, onnx_path, windower, batches)
    if not worst <= tolerance:  # also catches NaN
        where = max(rows, key=lambda r: r["max_abs_diff"])
        raise ExportCheckError(
            f"export check failed for {Path(onnx_path).name}: output '{OUTPUT_NAME}' differs from PyTorch by "
            f"{worst:.3g} (tolerance {tolerance:g}) at batch {where['batch']} x {where['tokens']} tokens"
        )
    return {"max_abs_diff": worst, "tolerance": tolerance, "batches": rows}
