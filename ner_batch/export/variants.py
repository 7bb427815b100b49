"""Model variants of a bundle: graph-optimized fp32, static and dynamic int8, and fp16 for CUDA.

``int8`` is *static*: the encoder's MatMuls (but the feed-forward down-projections, see
:func:`encoder_matmuls`) are quantized in QDQ form with symmetric per-channel int8 weights
and uint8 activations whose scales were fixed by calibration on DNRTI train. Every
activation scale is a constant of the graph, so a sentence's output does not depend on the
sentences that share its batch. LayerNorm, Softmax, GELU, the attention-mask Add, the LSTM
and the emission layer stay fp32.

``int8-dynamic`` (ONNX Runtime's ``quantize_dynamic``) computes each activation's scale
at run time from the whole batch tensor, padding included, so its labels can change with
the batching (``--token-budget``, ``--max-batch``, ``--shard-docs``, resume).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any


def _attention_shape(encoder_config: dict[str, Any]) -> tuple[int, int]:
    heads = encoder_config.get("num_attention_heads", encoder_config.get("n_heads"))
    hidden = encoder_config.get("hidden_size", encoder_config.get("dim"))
    if not heads or not hidden:
        raise ValueError("expected num_attention_heads and hidden_size in the encoder config, found neither")
    return int(heads), int(hidden)


def _optimizer(fp32: Path, encoder_config: dict[str, Any], encoders: int = 1):
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = _attention_shape(encoder_config)  # BERT-like encoders (DistilBERT too) fuse as "bert"
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    options = FusionOptions("bert")
    # The embedding fusion takes the attention mask over for its encoder; with several encoders
    # reading one mask (an ensemble) the next one finds it gone (a KeyError in ONNX Runtime's
    # fusion), so an ensemble keeps its embeddings unfused; attention and the rest fuse as usual.
    options.enable_embed_layer_norm = encoders == 1
    # opt_level 0: only the Python fusions (attention, layer norm, gelu, skip layer norm);
    # ONNX Runtime applies its own graph optimizations at session start.
    return optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=False,
                          optimization_options=options)


def optimize_fp32(fp32: Path, out: Path, encoder_config: dict[str, Any], encoders: int = 1) -> dict[str, int]:
    """Transformer fusions of ONNX Runtime (``encoders``: how many the graph holds); returns the fused-operator counts."""
    model = _optimizer(fp32, encoder_config, encoders)
    model.save_model_to_file(str(out))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def quantize_int8_dynamic(source: Path, out: Path) -> None:
    """Dynamic int8 quantization of MatMul/Gemm weights (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" note
    quantize_dynamic(
        str(source), str(out), weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
        # Fused contrib ops (Attention, SkipLayerNormalization), if any, defeat ONNX shape inference.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def convert_fp16(fp32: Path, out: Path, encoder_config: dict[str, Any], encoders: int = 1) -> None:
    """Optimized graph with fp16 weights and compute, fp32 inputs/outputs (for CUDA)."""
    model = _optimizer(fp32, encoder_config, encoders)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))


#: Node names inside an encoder: ``/encoder/...`` (one model) or ``/members.N/encoder/...`` (an ensemble).
ENCODER_NODE = re.compile(r"^(/members\.\d+)?/encoder/")


def encoder_matmuls(source: Path, *, down_projections: bool = False) -> tuple[list[str], list[str]]:
    """Names of the encoder MatMuls to quantize, and of the MatMuls kept in fp32.

    Kept in fp32: everything outside the encoder (LSTM, emission layer) and the encoder's
    feed-forward *down-projections* (weight of shape ``(intermediate, hidden)``), whose input is
    the GELU output: a long positive tail that one uint8 scale per tensor covers badly. On the
    softmax MiniLM model this was worth 1.1 test F1 points (85.98 -> 87.08 against fp32 87.25).
    ``down_projections=True`` quantizes those too (the bench measures it).
    """
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    inside, outside = [], []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((shapes[i] for i in node.input if i in shapes and len(shapes[i]) == 2), None)
        down = weight is not None and weight[0] > weight[1]
        (inside if ENCODER_NODE.match(node.name) and (down_projections or not down) else outside).append(node.name)
    return inside, outside


#: Rows (windows) per MinMax calibration run. ONNX Runtime's calibrator session holds a run's
#: activations, so memory grows with the batch: exporting one MiniLM encoder + BiLSTM peaked at
#: 4.2 GB RSS with the runtime's 32-row batches, 2.8 GB at 8 rows, 1.4 GB at 2 (an 8-encoder
#: ensemble ran out of 24 GiB at 32). Min/max ranges do not depend on the split: the rows keep
#: their batch's padded length and each row's activations are computed alone (the int8 graph
#: came out byte-identical at 32 and 8 rows). Percentile calibration keeps whole batches.
CALIBRATION_ROWS = 2


class _Calibration:
    """Feeds calibration batches (graph input dicts) to ONNX Runtime's calibrator, ``rows``
    rows at a time (0: whole batches)."""

    def __init__(self, batches: list[dict[str, Any]], input_names: list[str], rows: int = 0):
        if rows < 0:
            raise ValueError(f"expected 0 (whole batches) or more rows per calibration run, got {rows}")
        self._it = self._pieces(batches, input_names, rows)

    @staticmethod
    def _pieces(batches, input_names, rows):
        for batch in batches:
            n = len(batch[input_names[0]])
            step = rows or n
            for i in range(0, n, step):
                yield {k: batch[k][i:i + step] for k in input_names}

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def quantize_int8_static(source: Path, out: Path, calibration: list[dict[str, Any]], *, reduce_range: bool = False,
                         down_projections: bool = False, method: str = "MinMax", percentile: float = 99.999,
                         rows: int | None = None) -> dict[str, Any]:
    """Static QDQ int8 of the encoder's MatMuls, calibrated on ``calibration`` batches
    (``method``: ONNX Runtime's ``MinMax``, or ``Percentile`` clipping each activation range at
    ``percentile``); returns what was done, for the manifest. The batches reach ONNX Runtime
    ``rows`` rows at a time (0: whole; default: CALIBRATION_ROWS for MinMax, whole for Percentile).

    ``reduce_range`` quantizes weights to 7 bits, which ONNX Runtime documents as the way to
    avoid int16 saturation of U8S8 products on x86 CPUs without VNNI. ``source`` may be the
    plain or the ORT-fused graph (MatMuls inside fused Attention nodes then stay fp32).
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("expected calibration batches for static int8, got none")
    logging.getLogger().setLevel(logging.ERROR)
    inside, outside = encoder_matmuls(source, down_projections=down_projections)
    names = [i.name for i in ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()]
    rows = (CALIBRATION_ROWS if method == "MinMax" else 0) if rows is None else rows
    reader = _Calibration(calibration, names, rows)
    quantize_static(
        str(source), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
        nodes_to_quantize=inside, nodes_to_exclude=outside, per_channel=True, reduce_range=reduce_range,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, "DefaultTensorType": onnx.TensorProto.FLOAT,
                       "CalibPercentile": percentile},
    )
    return {"method": f"static QDQ, {method} calibration", "calibration_batches": len(calibration),
            "calibration_rows_per_run": rows or "whole batches",
            "quantized_matmuls": len(inside), "fp32_matmuls": len(outside), "weights": "int8 symmetric per channel",
            "activations": "uint8 asymmetric per tensor, fixed scales", "reduce_range": reduce_range}
