"""Torch-free inference on exported clipedge models (numpy + onnxruntime or TensorRT).

    from clipedge.runtime import Classifier
    classifier = Classifier("model.onnx")
    prediction = classifier("frame.jpg")      # .label, .score, .labels, .indices, .scores
"""

from .classifier import Classifier, Prediction

__all__ = ["Classifier", "Prediction"]
