"""Export: ONNX graph, variants, export check, bundle."""
