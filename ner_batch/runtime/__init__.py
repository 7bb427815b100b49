"""Torch-free runtime: ONNX Runtime session, batching, NumPy decoding, tagger."""
