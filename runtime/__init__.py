"""Torch-free inference on exported clipedge models (numpy + onnxruntime or TensorRT)."""
