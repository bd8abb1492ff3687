"""Confidence calibration and INT8 quantization of exported models."""
