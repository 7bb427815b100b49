"""Model variants of a bundle: graph-optimized fp32, dynamic int8, and fp16 for CUDA."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


def _attention_shape(encoder_config: dict[str, Any]) -> tuple[int, int]:
    heads = encoder_config.get("num_attention_heads", encoder_config.get("n_heads"))
    hidden = encoder_config.get("hidden_size", encoder_config.get("dim"))
    if not heads or not hidden:
        raise ValueError("expected num_attention_heads and hidden_size in the encoder config, found neither")
    return int(heads), int(hidden)


def _optimizer(fp32: Path, encoder_config: dict[str, Any]):
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = _attention_shape(encoder_config)  # BERT-like encoders (DistilBERT too) fuse as "bert"
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # opt_level 0: only the Python fusions (attention, layer norm, gelu, skip layer norm);
    # ONNX Runtime applies its own graph optimizations at session start.
    return optimize_model(str(fp32), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0, use_gpu=False)


def optimize_fp32(fp32: Path, out: Path, encoder_config: dict[str, Any]) -> dict[str, int]:
    """Transformer fusions of ONNX Runtime; returns the fused-operator counts."""
    model = _optimizer(fp32, encoder_config)
    model.save_model_to_file(str(out))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def quantize_int8(source: Path, out: Path) -> None:
    """Dynamic int8 quantization of MatMul/Gemm weights (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" note
    quantize_dynamic(
        str(source), str(out), weight_type=QuantType.QInt8, per_channel=False, reduce_range=False,
        # Fused contrib ops (Attention, SkipLayerNormalization), if any, defeat ONNX shape inference.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def convert_fp16(fp32: Path, out: Path, encoder_config: dict[str, Any]) -> None:
    """Optimized graph with fp16 weights and compute, fp32 inputs/outputs (for CUDA)."""
    model = _optimizer(fp32, encoder_config)
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))
