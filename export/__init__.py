"""Fusion of backbone and head into one graph, and its ONNX/TensorRT export."""
